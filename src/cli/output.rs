//! # Output
//!
//! How the commands print: standard output written at once (`emit`), aligned text tables, number
//! formats, and the progress bars on standard error (indicatif hides them when standard error is not a
//! terminal).

use std::io::Write;
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressStyle};

/// Writes `text` to standard output at once.
pub fn emit(text: &str) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Left-aligns the first `left` columns, right-aligns the rest.
pub fn table(header: &[&str], rows: &[Vec<String>], left: usize) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(c.chars().count());
            if i > 0 {
                s.push_str("  ");
            }
            if i < left {
                s.push_str(c);
                if i + 1 < cells.len() {
                    s.push_str(&" ".repeat(pad));
                }
            } else {
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            }
        }
        s.push('\n');
        s
    };
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    let mut out = line(&header);
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

/// Words filled into lines of at most `width` characters, each starting with `indent`.
pub fn wrap(items: &[String], width: usize, indent: &str) -> String {
    let mut out = String::new();
    let mut line = String::from(indent);
    for it in items {
        if line.len() > indent.len() && line.len() + it.len() + 1 > width {
            out.push_str(line.trim_end());
            out.push('\n');
            line = String::from(indent);
        }
        line.push_str(it);
        line.push(' ');
    }
    if line.len() > indent.len() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A duration in words for people: `45 s`, `12 min`, `1 h 20 min`.
pub fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    match s {
        0..=89 => format!("{s} s"),
        90..=5399 => format!("{} min", (s + 30) / 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600 + 30) / 60),
    }
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A quality value with 4 significant digits (KL divergences of good points are ~1e-5).
pub fn quality(q: f64) -> String {
    if q != 0.0 && q.abs() < 1e-3 {
        format!("{q:.3e}")
    } else {
        format!("{q:.5}")
    }
}

/// A bar style from `template`, or indicatif's default should the template not parse.
fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

/// A bar of `total` steps labelled `what` (the label can change with `set_message`).
pub fn progress_bar(total: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    bar.set_style(style(
        "{msg} {bar:30} {pos}/{len} {elapsed_precise} eta {eta}",
    ));
    bar.set_message(what.to_string());
    bar
}

/// A bar whose message, after the counts, says what is being measured now.
pub fn measure_bar() -> ProgressBar {
    let bar = ProgressBar::new(1);
    bar.set_style(style(
        "{bar:30} {pos}/{len} {elapsed_precise} eta {eta} {msg}",
    ));
    bar
}

/// The `progress(done, total, what)` callback of a long measurement, shown on `bar`.
pub fn show_progress(bar: &ProgressBar) -> impl FnMut(usize, usize, &str) + '_ {
    |done, total, what| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
        bar.set_message(what.to_string());
    }
}

/// The trials of run `name`, out of `trials` (no length without a trial budget).
pub fn trial_bar(name: &str, trials: Option<u64>) -> ProgressBar {
    let bar = match trials {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::no_length(),
    };
    bar.set_style(style(
        "{prefix} {bar:25} {pos}/{len} trials  {msg}  {elapsed_precise} eta {eta}",
    ));
    bar.set_prefix(name.to_string());
    bar
}
