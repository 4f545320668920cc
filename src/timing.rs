//! # Timing statistics and the machine's load
//!
//! What `calibrate` and `measure` share when they time candle: how one round times a thing
//! ([`Schedule`]: warm-up, then timed runs until there are enough or the round's time is up), the
//! figure of several rounds of timed runs ([`RoundFigure`]), and how much of the machine other
//! processes used meanwhile (from `/proc/stat`), so that a figure taken on a busy machine can be told from a quiet one.
//!
//! **The figure is the fastest run.** On a shared machine other processes only ever add time to a run
//! (a preempted thread, a cache another process evicted, candle's pool threads spinning for a core
//! that is busy elsewhere), never take it away, so the fastest of many runs is the estimate of the
//! machine running the model alone that moves least from one measurement to the next — the argument
//! of Chen & Revels, "Robust benchmarking in noisy environments", arXiv:1608.04295, 2016 (the
//! estimator of Julia's BenchmarkTools). Measured here (BENCHMARKS.md, "Which figure"): two
//! measurements of the same 58 demo points minutes apart rank them alike to Spearman 0.954 by their
//! fastest pass, 0.896 by the median of their fastest round, 0.78 by the median of all passes.
//! `calibrate` and `measure` use the same figure, so a prediction and a measurement compare like
//! with like. The median and interquartile range of the round with the lowest median are kept to
//! describe the spread, and every round's median to tell a noisy figure.

use std::time::{Duration, Instant};

use crate::error::Result;

/// How one thing (a kernel on a shape, a model's forward pass) is timed in one round: untimed warm-up,
/// then timed runs until there are enough or the round's time is up. The one schedule of `calibrate`
/// (isolated shapes and inside the model) and `measure`.
#[derive(Clone, Debug, PartialEq)]
pub struct Schedule {
    /// Untimed runs first (at least one: some kernels repack their weights on the first call) …
    pub warmup: usize,
    /// … going on for at least this many seconds (caches, clocks and candle's thread pool settle
    /// after switching models).
    pub warmup_seconds: f64,
    /// Timed runs at most …
    pub repetitions: usize,
    /// … and none started after this many seconds of them once [`Schedule::least`] are done (a
    /// large model at a large batch takes a second a pass).
    pub max_seconds: f64,
    /// Timed runs always done in this round, whatever [`Schedule::max_seconds`] (at least one):
    /// the round's share of [`MIN_PASSES`] ([`Schedule::least_per_round`]).
    pub least: usize,
}

/// Timed runs always done per measured thing, over all its rounds together, whatever
/// [`Schedule::max_seconds`]: 9 rounds take one each. A pass of a large model at a large batch takes
/// seconds, and 9 rounds of 3 of them made a MiniLM calibration take 24 minutes.
pub const MIN_PASSES: usize = 3;

impl Schedule {
    /// [`MIN_PASSES`] shared by `rounds` rounds: the timed runs each round always does.
    pub fn least_per_round(rounds: usize) -> usize {
        MIN_PASSES.div_ceil(rounds.max(1))
    }

    /// Warms `run` up, then times up to `repetitions` calls of it (see [`Schedule::max_seconds`]);
    /// the times in µs, in call order.
    pub fn time(&self, mut run: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
        Ok(self
            .time_reading(&mut run, || ())?
            .into_iter()
            .map(|(us, ())| us)
            .collect())
    }

    /// [`Schedule::time`], calling `read` after each run (warm-up included), outside the timed span:
    /// what the run recorded (a model's per-layer times), beside its time.
    pub fn time_reading<T>(
        &self,
        mut run: impl FnMut() -> Result<()>,
        mut read: impl FnMut() -> T,
    ) -> Result<Vec<(f64, T)>> {
        let warming = Instant::now();
        let warmup_time = Duration::from_secs_f64(self.warmup_seconds.max(0.0));
        let mut runs = 0;
        while runs < self.warmup.max(1) || warming.elapsed() < warmup_time {
            run()?;
            read();
            runs += 1;
        }
        let reps = self.repetitions.max(1);
        let least = self.least.clamp(1, reps);
        let budget = Duration::from_secs_f64(self.max_seconds.max(0.0));
        let started = Instant::now();
        let mut times = Vec::with_capacity(reps);
        while times.len() < reps && (times.len() < least || started.elapsed() < budget) {
            let t0 = Instant::now();
            run()?;
            let us = t0.elapsed().as_secs_f64() * 1e6;
            times.push((us, read()));
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

/// The figure of rounds of timed runs of one thing (see the module docs).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RoundFigure {
    /// The fastest run of all rounds, µs: the figure.
    pub fastest_us: f64,
    /// Median of the runs of the round with the lowest median, µs.
    pub median_us: f64,
    /// Interquartile range of that round, µs.
    pub spread_us: f64,
    /// Every round's median, in order.
    pub round_medians_us: Vec<f64>,
    /// Share of the CPUs other processes used during the round with the lowest median.
    pub other_load: Option<f64>,
    /// Timed runs in all rounds.
    pub runs: usize,
}

impl RoundFigure {
    /// The figure of `rounds`, each its runs' times in µs and the load during it; rounds without a
    /// run are left out. `None` without a run.
    pub fn of<'a>(
        rounds: impl IntoIterator<Item = (&'a [f64], Option<f64>)>,
    ) -> Option<RoundFigure> {
        let mut fastest_us = f64::INFINITY;
        let mut best: Option<(f64, f64, Option<f64>)> = None;
        let mut round_medians_us = Vec::new();
        let mut runs = 0;
        for (times, load) in rounds {
            if times.is_empty() {
                continue;
            }
            let (median, iqr) = median_iqr(times);
            fastest_us = times.iter().copied().fold(fastest_us, f64::min);
            if best.is_none_or(|b| median < b.0) {
                best = Some((median, iqr, load));
            }
            round_medians_us.push(median);
            runs += times.len();
        }
        let (median_us, spread_us, other_load) = best?;
        Some(RoundFigure {
            fastest_us,
            median_us,
            spread_us,
            round_medians_us,
            other_load,
            runs,
        })
    }

    /// The slowest round's median over the lowest one (1 on a perfectly quiet machine).
    pub fn round_disagreement(&self) -> f64 {
        round_disagreement(self.median_us, &self.round_medians_us)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_warms_up_then_times_its_repetitions() {
        let mut calls = 0;
        let s = Schedule {
            warmup: 3,
            warmup_seconds: 0.0,
            repetitions: 4,
            max_seconds: 60.0,
            least: 1,
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
        // What each timed run recorded is read after it, warm-up runs' readings dropped.
        let (mut runs, mut reads) = (0, 0);
        let read = s
            .time_reading(
                || {
                    runs += 1;
                    Ok(())
                },
                || {
                    reads += 1;
                    reads
                },
            )
            .expect("time");
        assert_eq!(read.iter().map(|r| r.1).collect::<Vec<_>>(), [4, 5, 6, 7]);
        assert_eq!(runs, 7);
        // Out of time: the least number of passes, then no more.
        let slow = Schedule {
            warmup: 1,
            warmup_seconds: 0.0,
            repetitions: 50,
            max_seconds: 0.0,
            least: 2,
        };
        let times = slow
            .time(|| {
                std::thread::sleep(Duration::from_millis(10));
                Ok(())
            })
            .expect("time");
        assert_eq!(times.len(), 2, "{times:?}");
        assert!(times.iter().all(|t| *t >= 10_000.0), "{times:?}");
        // The least passes are shared by the rounds: 9 rounds do one each, one round all three.
        assert_eq!(
            [1, 2, 3, 9].map(Schedule::least_per_round),
            [MIN_PASSES, 2, 1, 1]
        );
    }
}
