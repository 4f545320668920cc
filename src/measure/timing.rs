//! # Timing whole forward passes
//!
//! How `measure` times one built model: untimed warm-up passes, then a number of timed passes, in
//! several rounds (each as [`crate::timing::Schedule`] says, as `calibrate` times); the figure is
//! the **fastest pass** of all rounds ([`crate::timing`] says why).
//! Other processes on a shared machine slow whole rounds — candle's quantized kernels by up to 20×,
//! since the threads of its pool spin-wait for each other and collapse when another process takes a
//! core —, and a latency figure describes the machine running the model alone, as the calibrated
//! profile does (`calibrate` takes the same figure). The median and interquartile range of the round
//! with the lowest median describe the spread; every round's median is kept, and the load other
//! processes put on the machine during that round is read from `/proc/stat`, so a noisy figure can be
//! told from a quiet one.

pub use crate::timing::{median_iqr, CpuSample, RoundFigure};

/// Spread (interquartile range over median) above which a figure is called noisy.
pub const NOISY_SPREAD: f64 = 0.10;
/// Slowest round median over the fastest above which a figure is called noisy.
pub const NOISY_ROUNDS: f64 = 1.25;

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
}
