//! # Timing statistics and the machine's load
//!
//! What `calibrate` and `measure` share when they time candle: the median and interquartile range of
//! a round of timed runs, and how much of the machine other processes used meanwhile (from
//! `/proc/stat`), so that a figure taken on a busy machine can be told from a quiet one.

use std::time::{Duration, Instant};

/// Median and interquartile range of `times` (linear interpolation between order statistics); `(NaN,
/// NaN)` for no times.
pub fn median_iqr(times: &[f64]) -> (f64, f64) {
    if times.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mut t = times.to_vec();
    t.sort_by(f64::total_cmp);
    let q = |p: f64| {
        let pos = p * (t.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        t[lo] + (t[hi] - t[lo]) * (pos - lo as f64)
    };
    (q(0.5), q(0.75) - q(0.25))
}

/// The slowest round's median over the reported (fastest) one, `median_us`: near 1 on a quiet
/// machine; 1 when there is nothing to compare.
pub fn round_disagreement(median_us: f64, round_medians_us: &[f64]) -> f64 {
    let max = round_medians_us.iter().copied().fold(f64::NAN, f64::max);
    if median_us > 0.0 && max.is_finite() {
        max / median_us
    } else {
        1.0
    }
}

/// Busy CPU ticks of the whole machine and of this process (Linux only).
#[derive(Clone, Copy, Debug)]
pub struct CpuSample {
    busy: u64,
    own: u64,
    at: Instant,
}

impl CpuSample {
    /// The counters now, from `/proc/stat` and `/proc/self/stat`; `None` where they cannot be read.
    pub fn now() -> Option<CpuSample> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal: all but idle and iowait are busy
        let busy = cpu
            .iter()
            .take(8)
            .enumerate()
            .filter(|(i, _)| *i != 3 && *i != 4)
            .map(|(_, v)| v)
            .sum();
        let own = std::fs::read_to_string("/proc/self/stat").ok()?;
        // after the parenthesised command name: utime and stime are fields 14 and 15 of the line
        let rest = own.rsplit_once(')')?.1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        let own = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        Some(CpuSample {
            busy,
            own,
            at: Instant::now(),
        })
    }

    /// Share of the machine's CPU capacity (0..1) other processes used between `self` and `later`;
    /// `None` when the interval is under 0.1 s (the counters tick every 10 ms).
    pub fn others_until(&self, later: &CpuSample) -> Option<f64> {
        let wall = later.at.duration_since(self.at);
        if wall < Duration::from_millis(100) {
            return None;
        }
        let ticks_per_s = 100.0; // USER_HZ, 100 on every mainstream Linux
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let others =
            later.busy.saturating_sub(self.busy) as f64 - later.own.saturating_sub(self.own) as f64;
        Some((others / (wall.as_secs_f64() * ticks_per_s * cores)).clamp(0.0, 1.0))
    }
}
