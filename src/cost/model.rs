//! # The cost model
//!
//! What one layer choice costs on a device, and what an assignment costs in total. Three costs:
//!
//! - **bytes**: weight storage as exported, device-independent. Values at the format's bits; integer
//!   formats add one f32 scale per scale group (tensor: 1, channel: one per row, `g<N>`: one per row and N
//!   columns) and, when asymmetric, one byte of zero point per group; unstructured sparsity stores the
//!   non-zeros plus a 1-bit-per-weight mask (or dense, if smaller); N:M stores the kept values plus
//!   ⌈log₂ M⌉ bits of position each; removed channels disappear (plus a 1-bit-per-row mask); low rank
//!   stores the two factors (m×k)(k×n), k = ⌈rank% × min(m, n)⌉, each quantized and sparsified as above.
//!   Biases stay f32.
//! - **bops**: bit operations per inference, MACs × weight bits × activation bits (32 for float
//!   activations), counting only the MACs that remain after pruning and factorization.
//! - **latency**: per kernel (one, or two for a factorized layer), a matching measured entry of the
//!   profile if there is one; otherwise the roofline `max(compute, memory) + per-layer overhead` where
//!   compute = remaining MACs × batch / throughput of the precision the device really runs
//!   ([`HardwareProfile::runs_as`]), and memory = (weight bytes as the device reads them + activation
//!   bytes) / bandwidth. The device reads sparse formats only for patterns it accelerates; otherwise it
//!   streams dense weights, at the width of the kernel it falls back to. Unstructured sparsity saves
//!   `unstructured_efficiency` of the pruned work; removed channels always save work; N:M saves N/M only
//!   on devices listing the pattern.
//!
//! A model runs its layers one after another, so every cost is additive over layers: a total is the
//! sum of the per-layer figures (a test checks this), and the cheapest and dearest reachable totals of a
//! space are sums of per-group minima and maxima ([`super::Feasibility`]).

use serde::{Deserialize, Serialize};

use super::profile::{HardwareProfile, MeasuredKey, Precision};
use crate::space::{
    kept_rows, rank_k, ActQuant, Choice, Granularity, LayerInfo, LayerKind, QuantScheme, Sparsity,
    WeightQuant,
};

/// The three costs of a layer or a model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Cost {
    /// Predicted latency of one inference (batch), microseconds.
    pub latency_us: f64,
    /// Weight storage, bytes.
    pub bytes: u64,
    /// Bit operations per inference.
    pub bops: f64,
}

impl std::ops::Add for Cost {
    type Output = Cost;
    fn add(self, o: Cost) -> Cost {
        Cost {
            latency_us: self.latency_us + o.latency_us,
            bytes: self.bytes + o.bytes,
            bops: self.bops + o.bops,
        }
    }
}

impl std::ops::AddAssign for Cost {
    fn add_assign(&mut self, o: Cost) {
        *self = *self + o;
    }
}

impl std::iter::Sum for Cost {
    fn sum<I: Iterator<Item = Cost>>(it: I) -> Cost {
        it.fold(Cost::default(), |a, b| a + b)
    }
}

/// Which cost a search minimises or a budget limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    Latency,
    Size,
    Bops,
}

impl Objective {
    pub const ALL: [Objective; 3] = [Objective::Latency, Objective::Size, Objective::Bops];

    /// The objective's value in `cost`.
    pub fn of(&self, cost: &Cost) -> f64 {
        match self {
            Objective::Latency => cost.latency_us,
            Objective::Size => cost.bytes as f64,
            Objective::Bops => cost.bops,
        }
    }

    /// `value` with its unit, for people.
    pub fn format(&self, value: f64) -> String {
        match self {
            Objective::Latency => format_us(value),
            Objective::Size => format_bytes(value),
            Objective::Bops => format!("{:.3} GBOPs", value / 1e9),
        }
    }
}

impl std::fmt::Display for Objective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Objective::Latency => "latency",
            Objective::Size => "size",
            Objective::Bops => "bops",
        })
    }
}

impl std::str::FromStr for Objective {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "latency" => Ok(Objective::Latency),
            "size" => Ok(Objective::Size),
            "bops" => Ok(Objective::Bops),
            _ => Err(format!(
                "`{s}` is not an objective; use latency, size or bops"
            )),
        }
    }
}

/// Parses a budget of `objective` with an optional unit: latency `800`, `800us`, `2.5ms`, `1s`
/// (plain numbers are µs); size `300000`, `512KB`, `1.5MiB`, `2GB` (plain numbers are bytes; KB/MB/GB
/// are powers of 1000, KiB/MiB/GiB of 1024); bops `1.2e9`, `1.2G`, `800M`.
pub fn parse_budget(objective: Objective, text: &str) -> std::result::Result<f64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| {
            !(c.is_ascii_digit() || c == '.' || c == 'e' || c == 'E' || c == '-' || c == '+')
        })
        .unwrap_or(t.len());
    // `1e3` is a number but `1E` alone would not be: let the number parser decide.
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a number with an optional unit"))?;
    let unit = unit.trim();
    let scale = match (objective, unit) {
        (_, "") => 1.0,
        (Objective::Latency, "us" | "µs") => 1.0,
        (Objective::Latency, "ms") => 1e3,
        (Objective::Latency, "s") => 1e6,
        (Objective::Size, "B") => 1.0,
        (Objective::Size, "KB" | "kB") => 1e3,
        (Objective::Size, "MB") => 1e6,
        (Objective::Size, "GB") => 1e9,
        (Objective::Size, "KiB") => 1024.0,
        (Objective::Size, "MiB") => 1024.0 * 1024.0,
        (Objective::Size, "GiB") => 1024.0 * 1024.0 * 1024.0,
        (Objective::Bops, "K") => 1e3,
        (Objective::Bops, "M") => 1e6,
        (Objective::Bops, "G") => 1e9,
        (Objective::Bops, "T") => 1e12,
        _ => {
            let units = match objective {
                Objective::Latency => "us, ms, s",
                Objective::Size => "B, KB, MB, GB, KiB, MiB, GiB",
                Objective::Bops => "K, M, G, T",
            };
            return Err(format!(
                "`{text}`: unknown unit `{unit}` for {objective}; use {units}"
            ));
        }
    };
    let v = value * scale;
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(format!("`{text}`: a budget must be a positive number"))
    }
}

/// Microseconds as `812.4 µs`, `3.21 ms` or `1.50 s`.
pub fn format_us(us: f64) -> String {
    if us >= 1e6 {
        format!("{:.2} s", us / 1e6)
    } else if us >= 1e3 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{us:.1} µs")
    }
}

/// Bytes as `512 B`, `12.3 KiB` or `4.56 MiB`.
pub fn format_bytes(b: f64) -> String {
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", b / (1024.0 * 1024.0 * 1024.0))
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.2} MiB", b / (1024.0 * 1024.0))
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

/// A layer's cost with how it was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct LayerCost {
    #[serde(flatten)]
    pub cost: Cost,
    /// Dense-equivalent MACs that remain per sample after pruning and factorization.
    pub macs: f64,
    /// The precision the device computes the layer in.
    pub runs_as: Precision,
    /// Whether the latency came from a measured entry (of every kernel of the layer).
    pub measured: bool,
}

/// One weight matrix as stored: `rows` outputs × `cols` inputs.
#[derive(Clone, Copy, Debug)]
struct Matrix {
    rows: u64,
    cols: u64,
}

/// The cost model of one profile at one batch size.
#[derive(Clone, Debug)]
pub struct CostModel {
    pub profile: HardwareProfile,
    /// Samples per inference (images, or tokens for sequence models).
    pub batch: u32,
    /// Per precision slot ([`slot`]): the precision it really runs as, and µs per MAC there.
    runs: [(Precision, f64); SLOTS],
    /// µs per byte of memory traffic.
    us_per_byte: f64,
}

/// Precisions have 10 slots: f32, f16, bf16, int2..=int8 (int0/int1 unused).
const SLOTS: usize = 11;

fn slot(p: Precision) -> usize {
    match p {
        Precision::F32 => 0,
        Precision::F16 => 1,
        Precision::Bf16 => 2,
        Precision::Int(b) => 2 + usize::from(b.min(8)),
    }
}

impl CostModel {
    /// A cost model; `batch` must be at least 1.
    pub fn new(profile: HardwareProfile, batch: u32) -> crate::Result<CostModel> {
        if batch == 0 {
            return Err(crate::Error::Infeasible {
                message: "batch must be at least 1 sample per inference".into(),
            });
        }
        let mut runs = [(Precision::F32, 0.0); SLOTS];
        for p in [Precision::F32, Precision::F16, Precision::Bf16]
            .into_iter()
            .chain((2..=8).map(Precision::Int))
        {
            let run = profile.runs_as(p);
            let gmacs = profile
                .gmacs
                .get(&run)
                .copied()
                .unwrap_or(profile.gmacs[&Precision::F32]);
            runs[slot(p)] = (run, 1.0 / (gmacs * 1e3));
        }
        let us_per_byte = 1.0 / (profile.bandwidth_gbs * 1e3);
        Ok(CostModel {
            profile,
            batch,
            runs,
            us_per_byte,
        })
    }

    /// The cost of `layer` under `choice`.
    pub fn layer(&self, layer: &LayerInfo, choice: &Choice) -> LayerCost {
        let (rows, cols) = (layer.rows(), layer.cols());
        let kept_rows = match choice.sparsity {
            Sparsity::Channels(p) => kept_rows(rows, p),
            _ => rows,
        };
        // The kernels of the layer: one matrix, or the two factors of a low-rank layer.
        let storage: [Matrix; 2];
        let factors: &[Matrix] = match choice.rank {
            Some(r) => {
                let k = rank_k(rows, cols, r);
                storage = [
                    Matrix {
                        rows: kept_rows,
                        cols: k,
                    },
                    Matrix { rows: k, cols },
                ];
                &storage
            }
            None => {
                storage = [
                    Matrix {
                        rows: kept_rows,
                        cols,
                    },
                    Matrix { rows: 0, cols: 0 },
                ];
                &storage[..1]
            }
        };
        let mut bytes: u64 = factors.iter().map(|m| stored_bytes(m, choice)).sum();
        if let Sparsity::Channels(_) = choice.sparsity {
            bytes += rows.div_ceil(8);
        }
        if layer.bias {
            bytes += 4 * kept_rows;
        }
        let apps = layer.applications();
        let run = self.kernel_precision(&choice.weights, choice.act);
        let mut latency = 0.0;
        let mut macs = 0.0;
        let mut measured = true;
        for (i, m) in factors.iter().enumerate() {
            let m_macs = if layer.kind == LayerKind::Embedding {
                // A lookup reads one row; a factorized table then multiplies it by the second factor.
                if i == 0 {
                    0.0
                } else {
                    (m.rows * m.cols) as f64
                }
            } else {
                (m.rows * m.cols) as f64 * apps
            };
            let work = m_macs * self.work_fraction(&choice.sparsity);
            macs += work;
            let hit = if self.profile.measured.is_empty() {
                None
            } else {
                self.profile.measured.get(&MeasuredKey {
                    kind: if choice.rank.is_some() && layer.kind == LayerKind::Embedding && i == 1 {
                        LayerKind::Linear
                    } else {
                        layer.kind
                    },
                    shape: self.factor_shape(layer, m, choice.rank.is_some(), i),
                    batch: self.batch,
                    weights: Precision::of_weights(&choice.weights),
                    act: choice.act,
                    sparsity: choice.sparsity,
                })
            };
            latency += match hit {
                Some(&us) => us,
                None => {
                    measured = false;
                    self.roofline(layer, m, i, choice, run, work)
                }
            };
        }
        let a_bits = if choice.act == ActQuant::None {
            32.0
        } else {
            8.0
        };
        let bops = macs * f64::from(choice.weights.bits()) * a_bits * f64::from(self.batch);
        LayerCost {
            cost: Cost {
                latency_us: latency,
                bytes,
                bops,
            },
            macs,
            runs_as: run,
            measured,
        }
    }

    /// The precision a layer with these weights and activations is computed in on this device.
    pub fn kernel_precision(&self, w: &WeightQuant, act: ActQuant) -> Precision {
        let want = match (w, act) {
            (WeightQuant::Int { .. }, ActQuant::None) => {
                self.profile.weight_only.unwrap_or(Precision::of_weights(w))
            }
            _ => Precision::of_weights(w),
        };
        if self.bit_serial(want) {
            return want;
        }
        self.runs[slot(want)].0
    }

    fn bit_serial(&self, p: Precision) -> bool {
        self.profile.bit_serial_gbops.is_some() && matches!(p, Precision::Int(_))
    }

    /// Share of the dense work that remains on this device after pruning (channel removal is already
    /// in the matrix shape).
    fn work_fraction(&self, s: &Sparsity) -> f64 {
        match *s {
            Sparsity::None | Sparsity::Channels(_) => 1.0,
            Sparsity::Unstructured(p) => {
                1.0 - self.profile.unstructured_efficiency * f64::from(p) / 100.0
            }
            Sparsity::NM { n, m } if self.profile.accelerates_nm(n, m) => {
                f64::from(n) / f64::from(m)
            }
            Sparsity::NM { .. } => 1.0,
        }
    }

    /// The shape a measured entry for kernel `i` of `layer` is keyed by.
    fn factor_shape(
        &self,
        layer: &LayerInfo,
        m: &Matrix,
        factorized: bool,
        i: usize,
    ) -> Vec<usize> {
        if !factorized && m.rows == layer.rows() {
            return layer.shape.clone();
        }
        match (layer.kind, i) {
            // A factorized convolution: a k×(in·kh·kw) convolution then a 1×1 convolution.
            (LayerKind::Conv2d, 1) => {
                let mut s = layer.shape.clone();
                s[0] = m.rows as usize;
                s
            }
            (LayerKind::Conv2d, _) => vec![m.rows as usize, m.cols as usize, 1, 1],
            _ => vec![m.rows as usize, m.cols as usize],
        }
    }

    /// Analytic latency of one kernel, µs.
    fn roofline(
        &self,
        layer: &LayerInfo,
        m: &Matrix,
        i: usize,
        c: &Choice,
        run: Precision,
        work: f64,
    ) -> f64 {
        let p = &self.profile;
        let batch = f64::from(self.batch);
        let us_per_mac = if self.bit_serial(run) {
            let a_bits = if c.act == ActQuant::None {
                8.0
            } else {
                f64::from(c.act.bits())
            };
            f64::from(run.bits()) * a_bits / (p.bit_serial_gbops.unwrap_or(1.0) * 1e3)
        } else {
            self.runs[slot(run)].1
        };
        let compute_us = work * batch * us_per_mac;
        // Weights as the device reads them.
        let read_sparse = match c.sparsity {
            Sparsity::NM { n, m } => p.accelerates_nm(n, m),
            Sparsity::Unstructured(_) => p.unstructured_efficiency > 0.0,
            Sparsity::None | Sparsity::Channels(_) => true,
        };
        let mut as_read = *c;
        if !read_sparse {
            as_read.sparsity = Sparsity::None;
        }
        if let (
            WeightQuant::Int {
                bits,
                scheme,
                granularity,
            },
            Precision::Int(k),
        ) = (c.weights, run)
        {
            if k > bits {
                as_read.weights = WeightQuant::Int {
                    bits: k,
                    scheme,
                    granularity,
                };
            }
        }
        let weight_bytes = if layer.kind == LayerKind::Embedding && i == 0 {
            // One row per sample.
            stored_bytes(m, &as_read) as f64 / m.rows as f64 * batch
        } else {
            stored_bytes(m, &as_read) as f64
        };
        let act_bytes = match (c.act, run) {
            (ActQuant::Int8Static | ActQuant::Int8Dynamic, _) => 1.0,
            (_, Precision::F16 | Precision::Bf16) => 2.0,
            _ => 4.0,
        };
        let apps = if layer.kind == LayerKind::Conv2d {
            layer.applications()
        } else {
            1.0
        };
        let inputs = match layer.kind {
            LayerKind::Conv2d if i + 1 == if c.rank.is_some() { 2 } else { 1 } => {
                // The input feature map, not its im2col expansion.
                let kernel = (layer.shape[2] * layer.shape[3]).max(1) as f64;
                m.cols as f64 / kernel
            }
            _ => m.cols as f64,
        };
        let act_traffic = batch * apps * (inputs + m.rows as f64) * act_bytes;
        let memory_us = (weight_bytes + act_traffic) * self.us_per_byte;
        compute_us.max(memory_us) + p.per_layer_us
    }

    /// Per-layer costs and the total of an assignment over `layers`; a layer the assignment does not
    /// name stays f32.
    pub fn assignment(
        &self,
        layers: &[LayerInfo],
        a: &crate::space::Assignment,
    ) -> (Vec<LayerCost>, Cost) {
        let per: Vec<LayerCost> = layers
            .iter()
            .map(|l| self.layer(l, a.get(&l.name).unwrap_or(&Choice::F32)))
            .collect();
        let total = per.iter().map(|c| c.cost).sum();
        (per, total)
    }
}

/// Bytes of one stored matrix under `c` (values, scales, zero points, sparsity metadata).
fn stored_bytes(m: &Matrix, c: &Choice) -> u64 {
    let values = m.rows * m.cols;
    let bits = u64::from(c.weights.bits());
    let dense_bits = values * bits;
    let value_bits = match c.sparsity {
        Sparsity::None | Sparsity::Channels(_) => dense_bits,
        Sparsity::Unstructured(p) => {
            let nnz = values - values * u64::from(p) / 100;
            (nnz * bits + values).min(dense_bits)
        }
        Sparsity::NM { n, m: mm } => {
            let kept = m.rows * (m.cols * u64::from(n)).div_ceil(u64::from(mm));
            let index_bits = u64::from(8 - (mm - 1).leading_zeros() as u8).max(1);
            kept * (bits + index_bits)
        }
    };
    let scale_bytes = match c.weights {
        WeightQuant::Int {
            scheme,
            granularity,
            ..
        } => {
            let groups = match granularity {
                Granularity::Tensor => 1,
                Granularity::Channel => m.rows,
                Granularity::Group(g) => m.rows * m.cols.div_ceil(u64::from(g)),
            };
            groups
                * if scheme == QuantScheme::Asymmetric {
                    5
                } else {
                    4
                }
        }
        _ => 0,
    };
    value_bits.div_ceil(8) + scale_bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(rows: u64, cols: u64) -> Matrix {
        Matrix { rows, cols }
    }

    #[test]
    fn storage_bytes_follow_the_formats() {
        let c = |s: &str| s.parse::<Choice>().unwrap();
        assert_eq!(stored_bytes(&m(10, 64), &c("f32")), 2560);
        assert_eq!(stored_bytes(&m(10, 64), &c("f16")), 1280);
        // 640 values × 8 bits + 10 f32 scales.
        assert_eq!(stored_bytes(&m(10, 64), &c("int8-sym-channel")), 640 + 40);
        // 640 × 4 bits + 10 rows × 2 groups × (4 + 1) bytes.
        assert_eq!(stored_bytes(&m(10, 64), &c("int4-asym-g32")), 320 + 100);
        // 2:4 keeps 320 values with 2-bit positions: 320 × (8 + 2) bits.
        assert_eq!(stored_bytes(&m(10, 64), &c("int8-sym-tensor+2:4")), 400 + 4);
        // 50% unstructured: 320 × 8 bits + 640-bit mask.
        assert_eq!(
            stored_bytes(&m(10, 64), &c("int8-sym-tensor+sparse50")),
            320 + 80 + 4
        );
        // 90% unstructured f32: 64 × 32 + 640 bits.
        assert_eq!(stored_bytes(&m(10, 64), &c("f32+sparse90")), 256 + 80);
    }

    #[test]
    fn budgets_parse_with_units() {
        assert_eq!(parse_budget(Objective::Latency, "800").unwrap(), 800.0);
        assert_eq!(parse_budget(Objective::Latency, "2.5ms").unwrap(), 2500.0);
        assert_eq!(
            parse_budget(Objective::Size, "1.5MiB").unwrap(),
            1.5 * 1024.0 * 1024.0
        );
        assert_eq!(parse_budget(Objective::Size, "2KB").unwrap(), 2000.0);
        assert_eq!(parse_budget(Objective::Bops, "1.2G").unwrap(), 1.2e9);
        assert_eq!(parse_budget(Objective::Bops, "1e9").unwrap(), 1e9);
        assert!(parse_budget(Objective::Latency, "5MB").is_err());
        assert!(parse_budget(Objective::Size, "-3").is_err());
        assert!(parse_budget(Objective::Size, "abc").is_err());
    }

    #[test]
    fn rank_rounds_up() {
        assert_eq!(rank_k(768, 3072, 50), 384);
        assert_eq!(rank_k(10, 64, 25), 3);
        assert_eq!(rank_k(10, 64, 1), 1);
    }
}
