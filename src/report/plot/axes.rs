//! Axes in units people read (µs or ms, KiB or MiB, GBOPs; decades for qualities that span them),
//! and the placement of point labels so that they do not cover each other.

use std::ops::Range;

use crate::cost::{Cost, Objective};

/// A cost axis: the objective's values in a display unit chosen from the largest value.
#[derive(Clone, Debug)]
pub struct CostAxis {
    objective: Objective,
    /// Raw units (µs, bytes, BOPs) per display unit.
    scale: f64,
    pub unit: &'static str,
}

impl CostAxis {
    /// The axis of `objective` for values up to `max` (raw units).
    pub fn new(objective: Objective, max: f64) -> CostAxis {
        let (scale, unit) = match objective {
            Objective::Latency if max < 2e3 => (1.0, "µs"),
            Objective::Latency if max < 2e6 => (1e3, "ms"),
            Objective::Latency => (1e6, "s"),
            Objective::Size if max < 2.0 * 1024.0 * 1024.0 => (1024.0, "KiB"),
            Objective::Size => (1024.0 * 1024.0, "MiB"),
            Objective::Bops if max < 2e9 => (1e6, "MBOPs"),
            Objective::Bops => (1e9, "GBOPs"),
        };
        CostAxis {
            objective,
            scale,
            unit,
        }
    }

    /// The cost's value on the axis.
    pub fn of(&self, c: &Cost) -> f64 {
        self.value(self.objective.of(c))
    }

    /// A raw value (µs, bytes, BOPs) on the axis.
    pub fn value(&self, raw: f64) -> f64 {
        raw / self.scale
    }

    /// The axis title, with the unit (and the profile for latency).
    pub fn title(&self, profile: &str) -> String {
        match self.objective {
            Objective::Latency => format!("predicted latency on {profile} ({})", self.unit),
            Objective::Size => format!("weight size ({})", self.unit),
            Objective::Bops => format!("bit operations per inference ({})", self.unit),
        }
    }

    /// A display range holding every value of `values` (display units), padded by 5 %.
    pub fn range(values: impl Iterator<Item = f64>) -> Range<f64> {
        padded(values, 0.05)
    }
}

/// `[min, max]` of the finite values, widened by `pad` of the span on each side (a unit range
/// around a single value).
pub fn padded(values: impl Iterator<Item = f64>, pad: f64) -> Range<f64> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    let span = hi - lo;
    if span <= 0.0 {
        let w = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        return (lo - w)..(hi + w);
    }
    (lo - pad * span)..(hi + pad * span)
}

/// A quality axis: linear, or in decades (log₁₀) when the positive values span more than two of
/// them. On a decade axis, values ≤ 0 (the f32 model's own quality) sit on the bottom line,
/// labelled 0.
#[derive(Clone, Debug)]
pub struct QualityAxis {
    pub log: bool,
    /// Axis range in axis units (decades when `log`).
    lo: f64,
    hi: f64,
    /// Whether the bottom line stands for 0 (a decade axis with values ≤ 0).
    zero_floor: bool,
}

impl QualityAxis {
    /// The axis for these values (non-finite ones ignored).
    pub fn new(values: impl Iterator<Item = f64> + Clone) -> QualityAxis {
        let finite = values.filter(|v| v.is_finite());
        let min_pos = finite
            .clone()
            .filter(|v| *v > 0.0)
            .fold(f64::INFINITY, f64::min);
        let max = finite.clone().fold(f64::NEG_INFINITY, f64::max);
        if min_pos.is_finite() && max / min_pos > 100.0 {
            let zero_floor = finite.clone().any(|v| v <= 0.0);
            let mut lo = min_pos.log10().floor();
            if zero_floor {
                lo -= 1.0;
            }
            let hi = max.log10().ceil().max(lo + 1.0);
            return QualityAxis {
                log: true,
                lo,
                hi,
                zero_floor,
            };
        }
        let r = padded(finite.chain([0.0]), 0.06);
        QualityAxis {
            log: false,
            lo: r.start.max(if max >= 0.0 { 0.0 } else { r.start }),
            hi: r.end,
            zero_floor: false,
        }
    }

    /// A quality's position on the axis.
    pub fn y(&self, q: f64) -> f64 {
        if self.log {
            if q > 0.0 {
                q.log10().max(self.lo)
            } else {
                self.lo
            }
        } else {
            q
        }
    }

    pub fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }

    /// How many tick labels to ask for (one per decade on a decade axis).
    pub fn ticks(&self) -> usize {
        if self.log {
            (self.hi - self.lo).round() as usize + 1
        } else {
            8
        }
    }

    /// The label of the tick at `v` (axis units): `10⁻⁵` on a decade axis (nothing between decades).
    pub fn tick(&self, v: f64) -> String {
        if !self.log {
            return short(v);
        }
        if (v - v.round()).abs() > 1e-6 {
            return String::new();
        }
        if self.zero_floor && (v - self.lo).abs() < 1e-6 {
            return "0".into();
        }
        power_of_ten(v.round() as i32)
    }

    /// The axis title: `label`, and "(log scale)" on a decade axis.
    pub fn title(&self, label: &str) -> String {
        if self.log {
            format!("{label}, log scale — lower is better")
        } else {
            format!("{label} — lower is better")
        }
    }
}

/// `10` with a superscript exponent: `10⁻⁵`.
pub fn power_of_ten(k: i32) -> String {
    const SUP: [char; 10] = ['⁰', '¹', '²', '³', '⁴', '⁵', '⁶', '⁷', '⁸', '⁹'];
    let mut s = String::from("10");
    if k < 0 {
        s.push('⁻');
    }
    for d in k.unsigned_abs().to_string().bytes() {
        s.push(SUP[usize::from(d - b'0')]);
    }
    s
}

/// A number in at most 4 significant digits, without trailing zeros.
pub fn short(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    if v.abs() >= 1e5 || v.abs() < 1e-3 {
        return format!("{v:.2e}");
    }
    let digits = (3 - v.abs().log10().floor() as i32).clamp(0, 6) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// A rectangle in pixels: left, top, width, height.
pub type Rect = (i32, i32, i32, i32);

fn overlap(a: Rect, b: Rect) -> i64 {
    let w = (a.0 + a.2).min(b.0 + b.2) - a.0.max(b.0);
    let h = (a.1 + a.3).min(b.1 + b.3) - a.1.max(b.1);
    if w <= 0 || h <= 0 {
        0
    } else {
        i64::from(w) * i64::from(h)
    }
}

/// Top-left corners for labels of sizes `sizes` (w, h) next to `anchors` (pixels), in order: for each,
/// the first of several spots around its anchor that overlaps no label placed before, no `avoid`
/// rectangle, and stays inside `bounds`; else the spot with the least overlap.
pub fn place_labels(
    anchors: &[(i32, i32)],
    sizes: &[(i32, i32)],
    avoid: &[Rect],
    bounds: Rect,
) -> Vec<(i32, i32)> {
    let mut placed: Vec<Rect> = Vec::new();
    let mut out = Vec::with_capacity(anchors.len());
    for (&(x, y), &(w, h)) in anchors.iter().zip(sizes) {
        let g = 7;
        let spots = [
            (x + g, y - h - 1),
            (x + g, y + 1),
            (x - g - w, y - h - 1),
            (x - g - w, y + 1),
            (x + g, y - h / 2),
            (x - g - w, y - h / 2),
            (x - w / 2, y - h - g),
            (x - w / 2, y + g),
            (x + g, y - 2 * h - 3),
            (x + g, y + h + 3),
            (x - g - w, y - 2 * h - 3),
            (x - g - w, y + h + 3),
        ];
        let cost = |&(sx, sy): &(i32, i32)| -> i64 {
            let r = (sx, sy, w, h);
            let outside = i64::from(w) * i64::from(h) - overlap(r, bounds);
            placed
                .iter()
                .chain(avoid)
                .map(|&o| overlap(r, o))
                .sum::<i64>()
                + 4 * outside
        };
        let best = spots
            .iter()
            .find(|s| cost(s) == 0)
            .or_else(|| spots.iter().min_by_key(|s| cost(s)))
            .copied()
            .unwrap_or((x + g, y));
        placed.push((best.0, best.1, w, h));
        out.push(best);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decades_for_values_spanning_them_with_zero_on_the_floor() {
        let a = QualityAxis::new([0.0, 3e-6, 0.4].into_iter());
        assert!(a.log);
        assert_eq!(a.range(), -7.0..0.0);
        assert_eq!(a.y(0.0), -7.0);
        assert_eq!(a.tick(-7.0), "0");
        assert_eq!(a.tick(-5.0), "10⁻⁵");
        assert_eq!(a.tick(-5.5), "");
        let lin = QualityAxis::new([0.01, 0.2].into_iter());
        assert!(!lin.log);
        assert_eq!(lin.y(0.2), 0.2);
    }

    #[test]
    fn cost_units_follow_the_largest_value() {
        assert_eq!(CostAxis::new(Objective::Latency, 36.0).unit, "µs");
        assert_eq!(CostAxis::new(Objective::Latency, 36_000.0).unit, "ms");
        assert_eq!(CostAxis::new(Objective::Size, 80_000.0).unit, "KiB");
        assert_eq!(CostAxis::new(Objective::Size, 90e6).unit, "MiB");
        assert_eq!(CostAxis::new(Objective::Bops, 3e10).unit, "GBOPs");
        let a = CostAxis::new(Objective::Latency, 36_000.0);
        assert_eq!(a.value(1500.0), 1.5);
        assert_eq!(short(15.25), "15.25");
        assert_eq!(short(2.0), "2");
    }

    #[test]
    fn labels_of_close_points_do_not_overlap() {
        let anchors = [(100, 100), (102, 104), (104, 108), (106, 112)];
        let sizes = [(20, 15); 4];
        let spots = place_labels(&anchors, &sizes, &[], (0, 0, 400, 400));
        for i in 0..4 {
            for j in 0..i {
                let a = (spots[i].0, spots[i].1, 20, 15);
                let b = (spots[j].0, spots[j].1, 20, 15);
                assert_eq!(overlap(a, b), 0, "labels {i} and {j} overlap: {spots:?}");
            }
        }
    }
}
