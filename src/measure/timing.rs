//! # Timing whole forward passes
//!
//! How `measure` times one built model: untimed warm-up passes, then a number of timed passes, in
//! several rounds; the figure is the median (and interquartile range) of the **fastest round**.
//! Other processes on a shared machine slow whole rounds — candle's quantized kernels by up to 20×,
//! since the threads of its pool spin-wait for each other and collapse when another process takes a
//! core —, and a latency figure describes the machine running the model alone, as the calibrated
//! profile does (`calibrate` keeps its fastest round too). Every round's median is kept, and the load
//! other processes put on the machine during the reported round is read from `/proc/stat`, so a noisy
//! figure can be told from a quiet one.

use std::time::{Duration, Instant};

use crate::error::Result;

/// Spread (interquartile range over median) above which a figure is called noisy.
pub const NOISY_SPREAD: f64 = 0.10;
/// Slowest round median over the fastest above which a figure is called noisy.
pub const NOISY_ROUNDS: f64 = 1.25;

/// How one (assignment, round) is timed.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    /// Untimed passes first (at least one: some kernels repack their weights on the first call) …
    pub warmup: usize,
    /// … going on for at least this many seconds (caches, clocks and candle's thread pool settle
    /// after switching models).
    pub warmup_seconds: f64,
    /// Timed passes.
    pub repetitions: usize,
}

impl Schedule {
    /// Warms `pass` up, then times `repetitions` calls of it; the times in µs, in call order.
    pub fn time(&self, mut pass: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
        let warming = Instant::now();
        let warmup_time = Duration::from_secs_f64(self.warmup_seconds.max(0.0));
        let mut runs = 0;
        while runs < self.warmup.max(1) || warming.elapsed() < warmup_time {
            pass()?;
            runs += 1;
        }
        let mut times = Vec::with_capacity(self.repetitions);
        for _ in 0..self.repetitions.max(1) {
            let t0 = Instant::now();
            pass()?;
            times.push(t0.elapsed().as_secs_f64() * 1e6);
        }
        Ok(times)
    }
}

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

/// What the rounds of one assignment say.
#[derive(Clone, Debug, PartialEq)]
pub struct Timing {
    /// Median of the fastest round's timed passes, µs.
    pub median_us: f64,
    /// Interquartile range of the fastest round's timed passes, µs.
    pub spread_us: f64,
    /// Every round's median, in the order they ran.
    pub round_medians_us: Vec<f64>,
    /// Timed passes per round.
    pub repetitions: usize,
    /// Share of the CPUs other processes used during the fastest round.
    pub other_load: Option<f64>,
}

impl Timing {
    /// The figure of `rounds` (each round's timed passes in µs and the load during it): the round of
    /// the lowest median. `None` without a round.
    pub fn of_rounds(rounds: &[(Vec<f64>, Option<f64>)]) -> Option<Timing> {
        let stats: Vec<(f64, f64, Option<f64>)> = rounds
            .iter()
            .map(|(t, load)| {
                let (m, iqr) = median_iqr(t);
                (m, iqr, *load)
            })
            .collect();
        let &(median_us, spread_us, other_load) =
            stats.iter().min_by(|a, b| a.0.total_cmp(&b.0))?;
        Some(Timing {
            median_us,
            spread_us,
            round_medians_us: stats.iter().map(|s| s.0).collect(),
            repetitions: rounds.iter().map(|r| r.0.len()).max().unwrap_or(0),
            other_load,
        })
    }

    /// The spread as a share of the median.
    pub fn relative_spread(&self) -> f64 {
        self.spread_us / self.median_us
    }

    /// The slowest round's median over the fastest's (1 on a perfectly quiet machine).
    pub fn round_disagreement(&self) -> f64 {
        let max = self
            .round_medians_us
            .iter()
            .copied()
            .fold(f64::NAN, f64::max);
        if self.median_us > 0.0 && max.is_finite() {
            max / self.median_us
        } else {
            1.0
        }
    }

    /// Whether the figure is noisy: its spread is above [`NOISY_SPREAD`] of the median, or its rounds
    /// are more than [`NOISY_ROUNDS`] apart.
    pub fn noisy(&self) -> bool {
        self.relative_spread() > NOISY_SPREAD || self.round_disagreement() > NOISY_ROUNDS
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quartiles_interpolate_between_order_statistics() {
        assert_eq!(median_iqr(&[5.0, 1.0, 3.0, 2.0, 4.0]), (3.0, 2.0));
        assert_eq!(median_iqr(&[7.0]), (7.0, 0.0));
        assert_eq!(median_iqr(&[1.0, 2.0, 3.0, 10.0]), (2.5, 3.0));
        assert!(median_iqr(&[]).0.is_nan());
    }

    #[test]
    fn the_fastest_round_is_reported_with_every_round_median() {
        let rounds = vec![
            (vec![30.0, 31.0, 29.0], Some(0.5)),
            (vec![10.0, 12.0, 11.0, 13.0, 9.0], Some(0.0)),
            (vec![20.0, 20.0, 20.0], None),
        ];
        let t = Timing::of_rounds(&rounds).expect("rounds");
        assert_eq!(t.median_us, 11.0);
        assert_eq!(t.spread_us, 2.0);
        assert_eq!(t.round_medians_us, vec![30.0, 11.0, 20.0]);
        assert_eq!(t.other_load, Some(0.0));
        assert_eq!(t.repetitions, 5);
        assert!((t.round_disagreement() - 30.0 / 11.0).abs() < 1e-12);
        assert!(t.noisy(), "rounds 2.7x apart");
        let quiet = Timing::of_rounds(&[(vec![100.0, 101.0, 99.0, 100.0], None)]).expect("one");
        assert!(!quiet.noisy(), "{quiet:?}");
        assert_eq!(Timing::of_rounds(&[]), None);
    }

    #[test]
    fn a_schedule_warms_up_then_times_its_repetitions() {
        let mut calls = 0;
        let s = Schedule {
            warmup: 3,
            warmup_seconds: 0.0,
            repetitions: 4,
        };
        let times = s
            .time(|| {
                calls += 1;
                Ok(())
            })
            .expect("time");
        assert_eq!(times.len(), 4);
        assert_eq!(calls, 7);
        assert!(times.iter().all(|t| *t >= 0.0));
    }
}
