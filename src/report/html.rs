//! The report page: one self-contained HTML file (plots inlined as PNG data, no external request)
//! with the run's summary (the search-vs-held-out gap included), the plots, a sortable table of the
//! front points — quality on the search and the held-out split, cost and the choice of every layer —,
//! the baselines, and, for a run whose points were measured, their measured latency against the
//! predicted one.
//!
//! A small script on the page checks itself when it loads: every image decoded and no script error
//! or `console.error`; it writes the result to `<body data-check="ok images=4/4 errors=0">`, which
//! the integration test reads from headless Chromium's DOM.

use std::fmt::Write;

use base64::Engine;

use super::data::{Baseline, FrontPoint, HeldOutSummary, LatencyPanel, ReportData};
use crate::cost::model::{format_bytes, format_us};

/// A plot to inline.
pub struct Image {
    /// File stem (`front`), also the figure's id.
    pub name: &'static str,
    /// What the plot shows, for `alt` and the caption.
    pub caption: String,
    pub png: Vec<u8>,
}

const STYLE: &str = "
body { font-family: system-ui, 'DejaVu Sans', sans-serif; margin: 2em auto; max-width: 1280px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { font-size: 1.25em; margin-top: 2em; }
dl.summary { display: grid; grid-template-columns: max-content auto; gap: .2em 1.2em; }
dl.summary dt { font-weight: 600; } dl.summary dd { margin: 0; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { color: #555; font-size: .95em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: .9em; }
th, td { border: 1px solid #ddd; padding: .25em .5em; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; cursor: pointer; user-select: none; position: sticky; top: 0; }
th.sorted-asc::after { content: ' ▲'; } th.sorted-desc::after { content: ' ▼'; }
td.choice, th.choice { text-align: left; font-family: ui-monospace, 'DejaVu Sans Mono', monospace; }
tbody tr:nth-child(even) { background: #fafafa; }
.notes li { color: #8a4b00; }
";

/// Counts script errors and `console.error` calls from the start, and on load writes the result of
/// the self-check into `body[data-check]`.
const CHECK: &str = r#"
(function () {
  var errors = 0;
  var original = console.error;
  console.error = function () { errors++; return original.apply(console, arguments); };
  window.addEventListener('error', function () { errors++; }, true);
  window.addEventListener('load', function () {
    var imgs = document.images, ok = 0;
    for (var i = 0; i < imgs.length; i++) {
      if (imgs[i].complete && imgs[i].naturalWidth > 0) ok++;
    }
    var good = ok === imgs.length && imgs.length > 0 && errors === 0;
    document.body.setAttribute('data-check',
      (good ? 'ok' : 'failed') + ' images=' + ok + '/' + imgs.length + ' errors=' + errors);
  });
})();
"#;

/// Sorts a table by the clicked column (numbers by `data-v`, the rest as text).
const SORT: &str = r#"
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, col) {
    th.addEventListener('click', function () {
      var asc = !th.classList.contains('sorted-asc');
      table.querySelectorAll('th').forEach(function (h) { h.classList.remove('sorted-asc', 'sorted-desc'); });
      th.classList.add(asc ? 'sorted-asc' : 'sorted-desc');
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = a.cells[col], y = b.cells[col];
        var vx = x.dataset.v, vy = y.dataset.v;
        var r = (vx !== undefined && vy !== undefined)
          ? parseFloat(vx) - parseFloat(vy)
          : x.textContent.localeCompare(y.textContent);
        return asc ? r : -r;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"#;

/// Escapes text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A quality with 4 significant digits (KL divergences of good points are ~1e-5).
pub fn quality(q: f64) -> String {
    if q != 0.0 && q.abs() < 1e-3 {
        format!("{q:.3e}")
    } else {
        format!("{q:.5}")
    }
}

/// The whole page.
pub fn page(d: &ReportData, images: &[Image]) -> String {
    let mut h = String::new();
    let title = format!("mpsearch report — run {}", d.run);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n\
         <style>{STYLE}</style>\n<script>{CHECK}</script>\n</head>\n<body>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    h.push_str(&summary(d));
    if !d.notes.is_empty() {
        h.push_str("<ul class=\"notes\">\n");
        for n in &d.notes {
            let _ = writeln!(h, "<li>{}</li>", escape(n));
        }
        h.push_str("</ul>\n");
    }
    let figure = |name: &str| -> String {
        images
            .iter()
            .find(|i| i.name == name)
            .map(figure)
            .unwrap_or_default()
    };
    h.push_str("<h2>Which point to ship</h2>\n");
    h.push_str(&figure("front"));
    h.push_str(&front_table(d));
    if !d.recovered.is_empty() {
        h.push_str("<h2>Recovered variants</h2>\n");
        h.push_str(&recovered_table(d));
    }
    h.push_str("<h2>What each front point does to each layer</h2>\n");
    h.push_str(&figure("allocation"));
    h.push_str("<h2>Baselines</h2>\n");
    h.push_str(&baseline_table(d));
    h.push_str("<h2>How far to trust the search</h2>\n");
    h.push_str(&figure("hypervolume"));
    h.push_str(&evaluations_table(d));
    h.push_str(&figure("hypervolume-evaluations"));
    h.push_str(&figure("sensitivity"));
    if !d.latency.is_empty() {
        h.push_str("<h2>Predicted against measured latency</h2>\n");
        h.push_str(&latency_summary(&d.latency));
        h.push_str(&figure("latency"));
        h.push_str(&latency_table(&d.latency));
    }
    let _ = write!(
        h,
        "<p>The plots are also in this folder as SVG and PNG files: {}.</p>\n\
         <script>{SORT}</script>\n</body>\n</html>\n",
        images
            .iter()
            .map(|i| format!("{0}.svg, {0}.png", i.name))
            .collect::<Vec<_>>()
            .join("; ")
    );
    h
}

/// The run's model evaluations by what they were for, and when its front reached 99% of its final
/// hypervolume.
fn evaluations_table(d: &ReportData) -> String {
    let e = &d.evaluations;
    let row = |what: &str, c: crate::store::EvalCount| {
        format!(
            "<tr><td>{what}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>\n",
            c.evaluated, c.cached
        )
    };
    let mut s = String::from(
        "<table class=\"evaluations\">\n<thead><tr><th>evaluations</th><th>computed</th><th>from the \
         cache</th></tr></thead>\n<tbody>\n",
    );
    s.push_str(&row("set-up (one-at-a-time measurements)", e.setup));
    s.push_str(&row("baselines", e.baselines));
    s.push_str(&row("trials", e.trials));
    if let Some(p) = &d.proxy {
        s.push_str(&row(
            &format!(
                "proxies (each {:.0}% of a full evaluation)",
                100.0 * p.share
            ),
            e.proxy,
        ));
    }
    s.push_str(&row("held-out (front points)", e.held_out));
    let _ = writeln!(
        s,
        "<tr><td>in all</td><td class=\"num\">{}</td><td></td></tr>\n</tbody>\n</table>",
        e.total
    );
    if let Some(p) = &d.proxy {
        let rho = p
            .spearman
            .map_or("no rank correlation yet".to_string(), |r| {
                format!("a proxy-vs-full Spearman ρ of {r:.3}")
            });
        let _ = writeln!(
            s,
            "<p>Proxy evaluations on the first {} search samples ({:.0}% of the split): {} trials \
             evaluated on the proxy, {} of them then in full ({rho} over those), {} pruned on the \
             proxy alone. In full evaluations, the run cost {:.1}.</p>",
            p.samples,
            100.0 * p.share,
            p.proxies,
            p.promoted,
            p.pruned,
            e.full_equivalent
        );
    }
    if !e.complete {
        s.push_str(
            "<p>This run was recorded before its set-up and held-out evaluations were counted: only \
             its trials are.</p>\n",
        );
    }
    if let Some(n) = d
        .hypervolume
        .iter()
        .find(|s| s.current)
        .and_then(|s| s.evaluations_to(0.99))
    {
        let _ = writeln!(
            s,
            "<p>The front reached 99% of its final hypervolume after {} model evaluations (set-up \
             and baselines included; a proxy counted as its share of a full one).</p>",
            if n.fract() == 0.0 {
                format!("{n}")
            } else {
                format!("{n:.1}")
            }
        );
    }
    s
}

fn summary(d: &ReportData) -> String {
    let hv = d
        .hypervolume
        .iter()
        .find(|s| s.current)
        .and_then(|s| s.values.last())
        .map_or("-".into(), |v| format!("{v:.4}"));
    let profile = match &d.recosted_from {
        Some(from) => format!("{} (re-costed; the run searched on {from})", d.profile),
        None => d.profile.clone(),
    };
    let rows = [
        ("model", d.model.clone()),
        ("search space", d.space.clone()),
        ("hardware profile", profile),
        (
            "objective",
            format!("{} against {}", d.quality.name, d.objective),
        ),
        ("strategy", d.strategy.clone()),
        ("status", d.status.clone()),
        (
            "trials",
            format!(
                "{} ({} failed), {} evaluated points",
                d.trials,
                d.failed,
                d.points.len()
            ),
        ),
        ("front", format!("{} points", d.front.len())),
        ("hypervolume", hv),
        ("evaluation data", splits(&d.held_out)),
        ("search → held-out gap", gap(&d.held_out)),
    ];
    let mut s = String::from("<dl class=\"summary\">\n");
    for (k, v) in rows {
        let _ = writeln!(s, "<dt>{}</dt><dd>{}</dd>", escape(k), escape(&v));
    }
    s.push_str("</dl>\n");
    s
}

/// The sizes of the data's splits, in words.
fn splits(h: &HeldOutSummary) -> String {
    match h.splits {
        Some(s) => format!(
            "{} search samples (the front is chosen on them), {} held-out (never searched on), {} \
             calibration",
            s.search, s.held_out, s.calibration
        ),
        None => "split sizes not recorded (a run from before held-out splits)".into(),
    }
}

/// The gap between the front's held-out and search qualities, in words.
pub fn gap(h: &HeldOutSummary) -> String {
    let Some(g) = &h.gap else {
        return "unknown: no front point has a held-out quality yet".into();
    };
    let relative = g
        .mean_relative
        .map(|r| format!(" ({:+.1}% of the quality)", 100.0 * r))
        .unwrap_or_default();
    let missing = if h.missing > 0 {
        format!("; {} front points lack a held-out quality", h.missing)
    } else {
        String::new()
    };
    format!(
        "held-out − search quality over {} front points: mean {}{relative}, worst {} (trial {}); mean \
         search {}, mean held-out {}{missing}",
        g.points,
        signed(g.mean),
        signed(g.worst),
        g.worst_trial,
        quality(g.mean_search),
        quality(g.mean_held_out)
    )
}

/// A quality difference with its sign.
fn signed(v: f64) -> String {
    if v >= 0.0 {
        format!("+{}", quality(v))
    } else {
        quality(v)
    }
}

fn figure(i: &Image) -> String {
    let data = base64::engine::general_purpose::STANDARD.encode(&i.png);
    format!(
        "<figure id=\"{0}\"><img src=\"data:image/png;base64,{data}\" alt=\"{1}\">\
         <figcaption>{1}</figcaption></figure>\n",
        i.name,
        escape(&i.caption)
    )
}

/// A numeric cell, sortable by `v`.
fn num(v: f64, shown: &str) -> String {
    format!("<td data-v=\"{v}\">{}</td>", escape(shown))
}

fn front_table(d: &ReportData) -> String {
    if d.front.is_empty() {
        return "<p>No complete trial meets the run's limits yet.</p>\n".into();
    }
    let mut s = String::from(
        "<div class=\"scroll\"><table class=\"sortable\" id=\"front-table\">\n<thead><tr>",
    );
    let second = d.quality.secondary.replace('_', " ");
    for head in [
        "point",
        "trial",
        &format!("{} (search)", d.quality.name),
        &format!("{} (held-out)", d.quality.name),
        &format!("{second} (search)"),
        &format!("{second} (held-out)"),
        "latency",
        "size",
        "GBOPs",
    ] {
        let _ = write!(s, "<th>{}</th>", escape(head));
    }
    for l in &d.layers {
        let _ = write!(s, "<th class=\"choice\" title=\"{0}\">{0}</th>", escape(l));
    }
    s.push_str("</tr></thead>\n<tbody>\n");
    for f in &d.front {
        s.push_str(&front_row(d, f));
    }
    s.push_str("</tbody></table></div>\n");
    s.push_str(
        "<p>Click a column to sort. Point numbers are the numbers in the plots; latency is predicted \
         under the profile above. The front was chosen on the search split, so its search qualities \
         are optimistic; the held-out qualities are measured on data the search never saw (",
    );
    s.push_str(&escape(&gap(&d.held_out)));
    s.push_str(").</p>\n");
    s
}

/// The cells every table row shares: quality, the secondary metric, latency, size, GBOPs.
fn measures(
    d: &ReportData,
    q: f64,
    metrics: &std::collections::BTreeMap<String, f64>,
    cost: &crate::cost::Cost,
) -> String {
    let mut s = num(q, &quality(q));
    s.push_str(&secondary(d, Some(metrics)));
    s.push_str(&costs(cost));
    s
}

/// The secondary metric's cell (`-` where there is none).
fn secondary(d: &ReportData, metrics: Option<&std::collections::BTreeMap<String, f64>>) -> String {
    match metrics.and_then(|m| m.get(&d.quality.secondary)) {
        Some(v) => num(*v, &format!("{v:.4}")),
        None => "<td data-v=\"0\">-</td>".into(),
    }
}

/// The latency, size and GBOPs cells.
fn costs(cost: &crate::cost::Cost) -> String {
    let mut s = num(cost.latency_us, &format_us(cost.latency_us));
    s.push_str(&num(cost.bytes as f64, &format_bytes(cost.bytes as f64)));
    s.push_str(&num(cost.bops / 1e9, &format!("{:.4}", cost.bops / 1e9)));
    s
}

fn front_row(d: &ReportData, f: &FrontPoint) -> String {
    let mut s = String::from("<tr>");
    s.push_str(&num(f.number as f64, &f.number.to_string()));
    s.push_str(&num(f.trial as f64, &f.trial.to_string()));
    s.push_str(&num(f.quality, &quality(f.quality)));
    match &f.held_out {
        Some(h) => s.push_str(&num(h.quality, &quality(h.quality))),
        None => s.push_str(
            "<td data-v=\"Infinity\" title=\"not evaluated on the held-out split\">-</td>",
        ),
    }
    s.push_str(&secondary(d, Some(&f.metrics)));
    s.push_str(&secondary(d, f.held_out.as_ref().map(|h| &h.metrics)));
    s.push_str(&costs(&f.cost));
    for c in &f.choices {
        let _ = write!(s, "<td class=\"choice\">{}</td>", escape(&c.to_string()));
    }
    s.push_str("</tr>\n");
    s
}

/// Every recovered variant of the run: which point it fine-tunes, how, and its quality before and
/// after on the held-out split.
fn recovered_table(d: &ReportData) -> String {
    let second = d.quality.secondary.replace('_', " ");
    let mut s = String::from(
        "<div class=\"scroll\"><table class=\"sortable\" id=\"recovered-table\">\n<thead><tr>",
    );
    for head in [
        "point",
        "trial",
        "variant",
        "state",
        &format!("{} (held-out) before", d.quality.name),
        "after",
        &format!("{second} (held-out) before"),
        "after",
        &format!("{} (search)", d.quality.name),
        "recipe",
        "steps (best)",
        "trained",
    ] {
        let _ = write!(s, "<th>{}</th>", escape(head));
    }
    s.push_str("</tr></thead>\n<tbody>\n");
    let optional = |q: Option<f64>| match q {
        Some(q) => num(q, &quality(q)),
        None => "<td data-v=\"Infinity\">-</td>".into(),
    };
    for r in &d.recovered {
        let point = d.front.iter().find(|f| f.trial == r.trial);
        s.push_str("<tr>");
        match point {
            Some(f) => s.push_str(&num(f.number as f64, &f.number.to_string())),
            None => s.push_str("<td data-v=\"Infinity\" title=\"not on the front\">-</td>"),
        }
        s.push_str(&num(r.trial as f64, &r.trial.to_string()));
        let _ = write!(
            s,
            "<td class=\"choice\" title=\"{}\">{}</td><td>{}</td>",
            escape(&r.key),
            escape(&r.key.chars().take(12).collect::<String>()),
            escape(&r.state.to_string())
        );
        s.push_str(&optional(r.before_held_out_quality));
        s.push_str(&optional(r.held_out_quality));
        s.push_str(&secondary(d, Some(&r.before_held_out_metrics)));
        s.push_str(&secondary(d, Some(&r.held_out_metrics)));
        s.push_str(&num(r.quality, &quality(r.quality)));
        let c = &r.recipe;
        // Encoders (scored by cosine distance) distil by their loss; classifiers by alpha and T.
        let loss = if d.quality.name == "cosine_distance" {
            format!("{} loss", c.loss)
        } else {
            format!("alpha {}, T {}", c.alpha, c.temperature)
        };
        let _ = write!(
            s,
            "<td class=\"choice\" title=\"{}\">{} epochs, batch {}, lr {:e}, {loss}, seed {}</td>",
            escape(&c.data),
            c.epochs,
            c.batch,
            c.lr,
            c.seed
        );
        let _ = write!(
            s,
            "<td data-v=\"{}\">{} of {} ({})</td>",
            r.steps, r.steps, r.total_steps, r.best_step
        );
        s.push_str(&num(r.seconds, &format!("{:.1} s", r.seconds)));
        s.push_str("</tr>\n");
    }
    s.push_str("</tbody></table></div>\n");
    let _ = writeln!(
        s,
        "<p>Each variant keeps its point's assignment and cost and fine-tunes its weights \
         (<code>mpsearch recover</code>); its qualities are measured against the original f32 model, \
         the held-out ones on data neither the search nor the training saw. The front plot joins each \
         point to its best variant. Export one with <code>mpsearch export {} --point K --recovered \
         --format safetensors</code>.</p>",
        escape(&d.run)
    );
    s
}

fn baseline_table(d: &ReportData) -> String {
    if d.baselines.is_empty() {
        return "<p>No baseline is in the evaluation cache (see the notes).</p>\n".into();
    }
    let mut s = String::from("<table class=\"sortable\" id=\"baseline-table\">\n<thead><tr>");
    let second = d.quality.secondary.replace('_', " ");
    for head in [
        "baseline",
        "choice",
        &d.quality.name,
        &second,
        "latency",
        "size",
        "GBOPs",
    ] {
        let _ = write!(s, "<th>{}</th>", escape(head));
    }
    s.push_str("</tr></thead>\n<tbody>\n");
    for b in &d.baselines {
        s.push_str(&baseline_row(d, b));
    }
    s.push_str("</tbody></table>\n<p>Each baseline gives every searchable layer that allows it the same choice \
                (the others stay f32); its quality comes from the evaluation cache.</p>\n");
    s
}

fn baseline_row(d: &ReportData, b: &Baseline) -> String {
    let mut s = format!(
        "<tr><td class=\"choice\">{}</td><td class=\"choice\">{}</td>",
        escape(&b.label),
        escape(&b.choice.to_string())
    );
    s.push_str(&measures(d, b.quality, &b.metrics, &b.cost));
    s.push_str("</tr>\n");
    s
}

/// One row per latency setting: what was measured, and how well the profile predicted it.
fn latency_summary(panels: &[LatencyPanel]) -> String {
    let mut s = String::from("<table id=\"latency-summary\">\n<thead><tr>");
    for head in [
        "measured on",
        "predicted by",
        "points",
        "MAPE",
        "Spearman ρ",
        "all-f32",
        "best speed-up",
    ] {
        let _ = write!(s, "<th>{}</th>", escape(head));
    }
    s.push_str("</tr></thead>\n<tbody>\n");
    for p in panels {
        let f = p.fidelity.as_ref();
        let reference = p.points.iter().find(|x| x.reference);
        let best = p
            .points
            .iter()
            .filter(|x| x.trial.is_some())
            .max_by(|a, b| a.speedup.total_cmp(&b.speedup));
        let _ =
            writeln!(
            s,
            "<tr><td class=\"choice\">{}</td><td class=\"choice\">{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&p.setting.to_string()),
            escape(&p.profile),
            f.map_or(0, |f| f.points),
            f.map_or("-".into(), |f| format!("{:.1} %", f.mape_percent)),
            f.and_then(|f| f.spearman)
                .map_or("-".into(), |r| format!("{r:.3}")),
            reference.map_or("-".into(), |x| format_us(x.measured_us)),
            best.map_or("-".into(), |x| escape(&format!("{:.2}× ({})", x.speedup, x.label))),
        );
    }
    s.push_str(
        "</tbody></table>\n<p>MAPE: mean of |predicted − measured| / measured over the measured \
         points (the all-f32 reference included); Spearman's ρ: how well the prediction ranks them. \
         Measured latencies are whole forward passes of the compressed model built on candle, the \
         fastest of several rounds of passes (other processes only ever slow a pass down).</p>\n",
    );
    s
}

/// Every measured point of every setting.
fn latency_table(panels: &[LatencyPanel]) -> String {
    let mut s = String::from(
        "<div class=\"scroll\"><table class=\"sortable\" id=\"latency-table\">\n<thead><tr>",
    );
    for head in [
        "measured on",
        "point",
        "predicted",
        "measured",
        "spread (IQR)",
        "measured / predicted",
        "speed-up over f32",
    ] {
        let _ = write!(s, "<th>{}</th>", escape(head));
    }
    s.push_str("</tr></thead>\n<tbody>\n");
    for p in panels {
        for x in &p.points {
            let _ = write!(
                s,
                "<tr><td class=\"choice\">{}</td><td class=\"choice\">{}</td>",
                escape(&p.setting.to_string()),
                escape(&x.label)
            );
            s.push_str(&num(x.predicted_us, &format_us(x.predicted_us)));
            s.push_str(&num(x.measured_us, &format_us(x.measured_us)));
            s.push_str(&num(x.spread_us, &format_us(x.spread_us)));
            let ratio = x.measured_us / x.predicted_us;
            s.push_str(&num(ratio, &format!("{ratio:.2}")));
            s.push_str(&num(x.speedup, &format!("{:.2}×", x.speedup)));
            s.push_str("</tr>\n");
        }
    }
    s.push_str("</tbody></table></div>\n");
    s
}
