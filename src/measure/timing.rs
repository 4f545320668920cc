//! # Timing whole forward passes
//!
//! How `measure` times one built model: untimed warm-up passes, then a number of timed passes, in
//! several rounds; the figure is the **fastest pass** of all rounds ([`crate::timing`] says why).
//! Other processes on a shared machine slow whole rounds — candle's quantized kernels by up to 20×,
//! since the threads of its pool spin-wait for each other and collapse when another process takes a
//! core —, and a latency figure describes the machine running the model alone, as the calibrated
//! profile does (`calibrate` takes the same figure). The median and interquartile range of the round
//! with the lowest median describe the spread; every round's median is kept, and the load other
//! processes put on the machine during that round is read from `/proc/stat`, so a noisy figure can be
//! told from a quiet one.

use std::time::{Duration, Instant};

use crate::error::Result;
pub use crate::timing::{median_iqr, CpuSample, RoundFigure};

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
    /// Timed passes at most …
    pub repetitions: usize,
    /// … and none started after this many seconds of them once [`Schedule::least`] are done (a
    /// large model at a large batch takes a second a pass).
    pub max_seconds: f64,
    /// Timed passes always done in this round, whatever [`Schedule::max_seconds`] (at least one):
    /// the round's share of [`MIN_PASSES`] ([`Schedule::least_per_round`]).
    pub least: usize,
}

/// Timed passes always done per assignment, over all its rounds together, whatever
/// [`Schedule::max_seconds`]: 9 rounds take one each, as `calibrate` shares its least runs.
pub const MIN_PASSES: usize = 3;

impl Schedule {
    /// [`MIN_PASSES`] shared by `rounds` rounds: the timed passes each round always does.
    pub fn least_per_round(rounds: usize) -> usize {
        MIN_PASSES.div_ceil(rounds.max(1))
    }

    /// Warms `pass` up, then times up to `repetitions` calls of it (see [`Schedule::max_seconds`]);
    /// the times in µs, in call order.
    pub fn time(&self, mut pass: impl FnMut() -> Result<()>) -> Result<Vec<f64>> {
        let warming = Instant::now();
        let warmup_time = Duration::from_secs_f64(self.warmup_seconds.max(0.0));
        let mut runs = 0;
        while runs < self.warmup.max(1) || warming.elapsed() < warmup_time {
            pass()?;
            runs += 1;
        }
        let reps = self.repetitions.max(1);
        let least = self.least.clamp(1, reps);
        let budget = Duration::from_secs_f64(self.max_seconds.max(0.0));
        let started = Instant::now();
        let mut times = Vec::with_capacity(reps);
        while times.len() < reps && (times.len() < least || started.elapsed() < budget) {
            let t0 = Instant::now();
            pass()?;
            times.push(t0.elapsed().as_secs_f64() * 1e6);
        }
        Ok(times)
    }
}

/// What the rounds of one assignment say: the [`RoundFigure`] of its passes, and the passes a round.
#[derive(Clone, Debug, PartialEq)]
pub struct Timing {
    pub figure: RoundFigure,
    /// Timed passes per round (the most any round did).
    pub repetitions: usize,
}

impl Timing {
    /// The figure of `rounds` (each round's timed passes in µs and the load during it). `None`
    /// without a timed pass.
    pub fn of_rounds(rounds: &[(Vec<f64>, Option<f64>)]) -> Option<Timing> {
        let figure = RoundFigure::of(rounds.iter().map(|(t, load)| (t.as_slice(), *load)))?;
        Some(Timing {
            figure,
            repetitions: rounds.iter().map(|r| r.0.len()).max().unwrap_or(0),
        })
    }

    /// Whether the figure is noisy (see [`noisy`]).
    pub fn noisy(&self) -> bool {
        let f = &self.figure;
        noisy(f.median_us, f.spread_us, &f.round_medians_us)
    }
}

/// Whether a figure is noisy: the spread of its quietest round is above [`NOISY_SPREAD`] of that
/// round's median (`median_us`), or its rounds' medians are more than [`NOISY_ROUNDS`] apart. The
/// one rule for a fresh [`Timing`] and a stored measurement record.
pub fn noisy(median_us: f64, spread_us: f64, round_medians_us: &[f64]) -> bool {
    spread_us / median_us > NOISY_SPREAD
        || crate::timing::round_disagreement(median_us, round_medians_us) > NOISY_ROUNDS
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
    fn the_fastest_pass_is_the_figure_with_every_round_median() {
        let rounds = vec![
            (vec![30.0, 31.0, 29.0], Some(0.5)),
            (vec![10.0, 12.0, 11.0, 13.0, 9.0], Some(0.0)),
            (vec![20.0, 20.0, 20.0], None),
        ];
        let t = Timing::of_rounds(&rounds).expect("rounds");
        let f = &t.figure;
        assert_eq!(f.fastest_us, 9.0);
        assert_eq!(f.median_us, 11.0);
        assert_eq!(f.spread_us, 2.0);
        assert_eq!(f.round_medians_us, vec![30.0, 11.0, 20.0]);
        assert_eq!(f.other_load, Some(0.0));
        assert_eq!(t.repetitions, 5);
        assert!((f.round_disagreement() - 30.0 / 11.0).abs() < 1e-12);
        assert!(t.noisy(), "rounds 2.7x apart");
        let quiet = Timing::of_rounds(&[(vec![100.0, 101.0, 99.0, 100.0], None)]).expect("one");
        assert!(!quiet.noisy(), "{quiet:?}");
        // One round, so no disagreement, but its quartiles 20% of its median apart.
        let wide =
            Timing::of_rounds(&[(vec![90.0, 100.0, 110.0, 120.0, 80.0], None)]).expect("one");
        assert!(wide.noisy(), "{wide:?}");
        assert!(
            !noisy(100.0, 10.0, &[100.0, 125.0]),
            "both limits are inclusive"
        );
        assert!(noisy(100.0, 10.1, &[100.0]) && noisy(100.0, 0.0, &[100.0, 125.1]));
        assert_eq!(Timing::of_rounds(&[]), None);
    }

    #[test]
    fn the_fastest_pass_may_come_from_another_round_than_the_lowest_median() {
        // Round 0 has one quiet pass among slow ones; round 1 the lower median; round 2 is empty.
        let f = RoundFigure::of([
            (&[50.0, 8.0, 40.0][..], Some(0.5)),
            (&[12.0, 11.0, 10.0][..], Some(0.1)),
            (&[][..], None),
        ])
        .expect("runs");
        assert_eq!(f.fastest_us, 8.0);
        assert_eq!((f.median_us, f.spread_us), (11.0, 1.0));
        assert_eq!(f.round_medians_us, vec![40.0, 11.0]);
        assert_eq!(f.other_load, Some(0.1));
        assert_eq!(f.runs, 6);
        assert!((f.round_disagreement() - 40.0 / 11.0).abs() < 1e-12);
        assert_eq!(RoundFigure::of([(&[][..], None)]), None);
    }

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
