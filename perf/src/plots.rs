//! The plots of a `weir-bench all` run, as SVG files beside `RESULTS.md`:
//!
//! - `throughput`: rate by frame size, weir beside its anchors, one panel per benchmark
//!   (the in-memory pipeline, forwarding real frames, WireGuard per core, WireGuard end to
//!   end);
//! - `policy`: classification rate by rule count, weir beside a linear scan and
//!   rte_acl (log–log);
//! - `latency`: percentiles of the control plane (event to snapshot), of pod attachment
//!   (ADD to traffic) and of forwarding, weir beside its anchors (log scale).
//!
//! The data is read from the reports by result name (the names each benchmark documents),
//! so a benchmark that failed, or ran other sizes, just leaves its panel out or changes its
//! groups. Log axes are drawn as the logarithm of the values on a linear axis, labelled with
//! the values.

use std::collections::BTreeMap;
use std::ops::Range;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::combined::Combined;
use crate::report::{count_label, Report};

/// One SVG document.
#[derive(Debug, Clone)]
pub struct PlotFile {
    /// The file name without `.svg`.
    pub stem: &'static str,
    /// What it shows (the alt text of its link).
    pub title: &'static str,
    pub svg: String,
}

/// Drawing failed (in memory: only a bug in the drawing code can cause it).
#[derive(Debug, thiserror::Error)]
#[error("drawing the {plot} plot: {message}")]
pub struct PlotError {
    plot: &'static str,
    message: String,
}

/// Categories on the x axis, a bar per series in each.
#[derive(Debug, Clone, PartialEq)]
pub struct BarPanel {
    pub title: String,
    /// The y axis: unit of the values.
    pub unit: String,
    pub log_y: bool,
    pub groups: Vec<String>,
    /// Name, and a value per group (none where the series has no figure).
    pub series: Vec<(String, Vec<Option<f64>>)>,
}

/// Lines over a numeric x axis, both axes logarithmic.
#[derive(Debug, Clone, PartialEq)]
pub struct LinePanel {
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    /// Name, and (x, y) points in increasing x.
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

/// Every plot the run has data for (a plot with no data at all is left out).
pub fn render(c: &Combined) -> Result<Vec<PlotFile>, PlotError> {
    let mut out = Vec::new();
    let throughput = throughput_panels(c);
    if !throughput.is_empty() {
        out.push(PlotFile {
            stem: "throughput",
            title: "Throughput by frame size, weir beside its anchors",
            svg: bars_svg("throughput", &throughput)?,
        });
    }
    if let Some(policy) = policy_panel(c) {
        out.push(PlotFile {
            stem: "policy",
            title: "Policy classification rate by rule count",
            svg: lines_svg("policy", &policy)?,
        });
    }
    let latency = latency_panels(c);
    if !latency.is_empty() {
        out.push(PlotFile {
            stem: "latency",
            title: "Latency percentiles, weir beside its anchors",
            svg: bars_svg("latency", &latency)?,
        });
    }
    Ok(out)
}

/// Rates by frame size: pipeline, forward, WireGuard per core and end to end.
pub fn throughput_panels(c: &Combined) -> Vec<BarPanel> {
    let mut panels = Vec::new();
    if let Some(r) = c.report("pipeline") {
        let mut p = PanelBuilder::default();
        // Series in reading order: weir with the harness, weir alone, then the goal.
        for pass in 0..3 {
            for x in &r.results {
                let Some((size, rest)) = sized(&x.name, "pipeline_udp4_") else {
                    continue;
                };
                let group = format!("{size} B");
                match (pass, rest, &x.anchor) {
                    (0, "rate", _) => p.add(&group, "weir, harness included", x.value),
                    (1, "net_ns", _) if x.value > 0.0 => {
                        p.add(&group, "weir, net of harness", 1e3 / x.value);
                    }
                    (2, "rate", Some(a)) => p.add(&group, &a.name, a.value),
                    _ => {}
                }
            }
        }
        panels.extend(p.build("pipeline in memory, one core", "Mpps", false));
    }
    if let Some(r) = c.report("forward") {
        let mut p = PanelBuilder::default();
        for (size, variant, value) in sized_variants(r, "forward_", "_mpps") {
            if !variant.contains("offered") {
                p.add(&format!("{size} B"), &display(variant), value);
            }
        }
        panels.extend(p.build(
            "forward: real frames through one core, delivered",
            "Mpps",
            false,
        ));
    }
    if let Some(r) = c.report("wireguard") {
        let mut p = PanelBuilder::default();
        for (size, variant, value) in sized_variants(r, "wireguard_", "_mpps") {
            p.add(&format!("{size} B"), &display(variant), value);
        }
        panels.extend(p.build(
            "WireGuard seal per core, in memory (inner packet size)",
            "Mpps",
            false,
        ));
        let mut p = PanelBuilder::default();
        for x in &r.results {
            let Some(variant) = x
                .name
                .strip_prefix("wireguard_e2e_")
                .and_then(|n| n.strip_suffix("_tcp_gbps"))
            else {
                continue;
            };
            let series = match variant {
                "weir" => "weir, WireGuard on".to_string(),
                "weir_cleartext" => "weir, WireGuard off".to_string(),
                "wireguard_go" => "wireguard-go".to_string(),
                other => display(other),
            };
            p.add("TCP, one stream, pod to pod", &series, x.value);
        }
        panels.extend(p.build("WireGuard end to end across two nodes", "Gbit/s", false));
    }
    panels
}

/// Classification rate by rule count: weir, the linear scan, rte_acl; weir and rte_acl on
/// one node's tables too.
pub fn policy_panel(c: &Combined) -> Option<LinePanel> {
    let r = c.report("policy")?;
    let mut series: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for x in &r.results {
        // The whole cluster (`policy_<R>_rules_classify_rate`), and one node's tables
        // (`policy_<R>_rules_node_classify_rate`).
        let rate = x.name.strip_prefix("policy_").and_then(|n| {
            n.strip_suffix("_rules_classify_rate")
                .map(|r| (r, false))
                .or_else(|| {
                    n.strip_suffix("_rules_node_classify_rate")
                        .map(|r| (r, true))
                })
        });
        if let Some((rules, node)) =
            rate.and_then(|(r, node)| parse_count_label(r).map(|r| (r, node)))
        {
            let rules = rules as f64;
            let (weir, acl) = if node {
                ("weir, one node", "rte_acl, one node")
            } else {
                ("weir", "rte_acl")
            };
            series.entry(weir).or_default().push((rules, x.value / 1e6));
            // Earlier reports name the anchor by the tool that ran it.
            if let Some(a) = x
                .anchor
                .as_ref()
                .filter(|a| a.name.starts_with("rte_acl") || a.name.starts_with("dpdk-test-acl"))
            {
                series.entry(acl).or_default().push((rules, a.value / 1e6));
            }
        } else if let Some(rules) = x
            .name
            .strip_prefix("policy_linear_")
            .and_then(|n| n.strip_suffix("_rules_ns"))
            .and_then(parse_count_label)
        {
            if x.value > 0.0 {
                series
                    .entry("linear scan")
                    .or_default()
                    .push((rules as f64, 1e3 / x.value));
            }
        }
    }
    if series.is_empty() {
        return None;
    }
    let order = [
        "weir",
        "rte_acl",
        "weir, one node",
        "rte_acl, one node",
        "linear scan",
    ];
    let mut series: Vec<(String, Vec<(f64, f64)>)> = order
        .iter()
        .filter_map(|name| series.remove(name).map(|p| (name.to_string(), p)))
        .collect();
    for (_, points) in &mut series {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    Some(LinePanel {
        title: "policy: classifications per second by rule count".into(),
        x_desc: "rules in the cluster".into(),
        y_desc: "million classifications/s".into(),
        series,
    })
}

/// Latency percentiles: control plane, attach, forwarding.
pub fn latency_panels(c: &Combined) -> Vec<BarPanel> {
    let mut panels = Vec::new();
    let mut percentiles = |r: &Report, prefix: &str, weir: &str, title: &str| {
        let mut p = PanelBuilder::default();
        let mut unit = String::new();
        for x in &r.results {
            let Some(pct) = x.name.strip_prefix(prefix).and_then(percentile_of) else {
                continue;
            };
            unit.clone_from(&x.unit);
            p.add(&pct, weir, x.value);
            if let Some(a) = &x.anchor {
                p.add(&pct, strip_percentile(&a.name), a.value);
            }
        }
        panels.extend(p.build(title, &unit, true));
    };
    if let Some(r) = c.report("control") {
        percentiles(
            r,
            "control_event_to_snapshot_",
            "weir",
            "control: event to published tables",
        );
    }
    if let Some(r) = c.report("attach") {
        percentiles(r, "attach_weir_", "weir-cni", "attach: ADD to first packet");
    }
    if let Some(r) = c.report("forward") {
        let mut p = PanelBuilder::default();
        let mut unit = String::new();
        for x in &r.results {
            let Some((size, rest)) = sized(&x.name, "forward_") else {
                continue;
            };
            let Some((variant, pct)) = rest.rsplit_once("_p").and_then(|(variant, tail)| {
                percentile_of(&format!("p{tail}")).map(|pct| (variant, pct))
            }) else {
                continue;
            };
            unit.clone_from(&x.unit);
            p.add(&format!("{size} B {pct}"), &display(variant), x.value);
        }
        panels.extend(p.build("forward: one-way latency at half load", &unit, true));
    }
    panels
}

/// The count a result name spells with `count_label` ("10", "1k", "100k").
pub fn parse_count_label(label: &str) -> Option<usize> {
    match label.strip_suffix('k') {
        Some(k) => k.parse::<usize>().ok()?.checked_mul(1000),
        None => label.parse().ok(),
    }
}

/// Collects (group, series, value) points into a panel, groups and series in the order
/// first seen.
#[derive(Default)]
struct PanelBuilder {
    groups: Vec<String>,
    series: Vec<(String, BTreeMap<usize, f64>)>,
}

impl PanelBuilder {
    fn add(&mut self, group: &str, series: &str, value: f64) {
        if !value.is_finite() {
            return;
        }
        let g = match self.groups.iter().position(|x| x == group) {
            Some(g) => g,
            None => {
                self.groups.push(group.to_string());
                self.groups.len() - 1
            }
        };
        let s = match self.series.iter().position(|(name, _)| name == series) {
            Some(s) => s,
            None => {
                self.series.push((series.to_string(), BTreeMap::new()));
                self.series.len() - 1
            }
        };
        self.series[s].1.insert(g, value);
    }

    fn build(self, title: &str, unit: &str, log_y: bool) -> Option<BarPanel> {
        if self.series.is_empty() {
            return None;
        }
        let n = self.groups.len();
        Some(BarPanel {
            title: title.to_string(),
            unit: unit.to_string(),
            log_y,
            groups: self.groups,
            series: self
                .series
                .into_iter()
                .map(|(name, values)| {
                    (
                        name,
                        (0..n).map(|g| values.get(&g).copied()).collect::<Vec<_>>(),
                    )
                })
                .collect(),
        })
    }
}

/// `(size, rest)` of a name `{prefix}{size}B_{rest}`.
fn sized<'a>(name: &'a str, prefix: &str) -> Option<(usize, &'a str)> {
    let tail = name.strip_prefix(prefix)?;
    let (size, rest) = tail.split_once("B_")?;
    Some((size.parse().ok()?, rest))
}

/// `(size, variant, value)` of every result `{prefix}{size}B_{variant}{suffix}` that is not
/// a second comparison of the same figure (`..._vs_...`).
fn sized_variants<'a>(
    r: &'a Report,
    prefix: &'a str,
    suffix: &'a str,
) -> impl Iterator<Item = (usize, &'a str, f64)> + 'a {
    r.results.iter().filter_map(move |x| {
        let (size, rest) = sized(&x.name, prefix)?;
        let variant = rest.strip_suffix(suffix)?;
        (!variant.contains("_vs_")).then_some((size, variant, x.value))
    })
}

/// "p50" for "p50_us", "p99.9" for "p999_ms"; none for anything else ("p99_vs_goal_ms").
fn percentile_of(name: &str) -> Option<String> {
    let digits = name.strip_prefix('p')?.split_once('_')?;
    let (digits, unit) = digits;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || unit.contains('_') {
        return None;
    }
    Some(match digits.len() {
        3 => format!("p{}.{}", &digits[..2], &digits[2..]),
        _ => format!("p{digits}"),
    })
}

/// An anchor's name without a trailing percentile ("bridge + host-local p99" is the series
/// "bridge + host-local").
fn strip_percentile(name: &str) -> &str {
    match name.rsplit_once(' ') {
        Some((head, tail))
            if tail.len() > 1
                && tail.starts_with('p')
                && tail[1..].bytes().all(|b| b.is_ascii_digit() || b == b'.') =>
        {
            head
        }
        _ => name,
    }
}

/// A variant of a result name as a series name: `weir_1k_rules` is "weir 1k rules".
fn display(variant: &str) -> String {
    variant.replace('_', " ")
}

const WIDTH: u32 = 1000;
const PANEL_HEIGHT: u32 = 320;
const LEGEND_WIDTH: u32 = 290;
const FONT: &str = "sans-serif";

/// Colour per series, in order (the Tableau 10 palette: distinct, and readable on white).
const COLOURS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

fn colour(i: usize) -> RGBColor {
    COLOURS[i % COLOURS.len()]
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// A linear axis labelled exactly at the given points (plotters' own linear axis picks its
/// own round numbers, which puts labels between the bar groups and at 10^0.5 on a log
/// axis).
struct Axis {
    range: Range<f64>,
    ticks: Vec<f64>,
}

impl Ranged for Axis {
    type ValueType = f64;
    type FormatOption = DefaultFormatting;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let span = self.range.end - self.range.start;
        let fraction = if span > 0.0 {
            (value - self.range.start) / span
        } else {
            0.0
        };
        limit.0 + (f64::from(limit.1 - limit.0) * fraction + 1e-3).floor() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.range.clone()
    }
}

fn svg(
    plot: &'static str,
    size: (u32, u32),
    draw: impl FnOnce(&Area<'_>) -> Result<(), String>,
) -> Result<String, PlotError> {
    let error = |message: String| PlotError { plot, message };
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| error(e.to_string()))?;
        draw(&root).map_err(error)?;
        root.present().map_err(|e| error(e.to_string()))?;
    }
    Ok(out)
}

fn bars_svg(plot: &'static str, panels: &[BarPanel]) -> Result<String, PlotError> {
    let height = PANEL_HEIGHT * panels.len() as u32;
    svg(plot, (WIDTH, height), |root| {
        for (area, panel) in root.split_evenly((panels.len(), 1)).iter().zip(panels) {
            draw_bars(area, panel)?;
        }
        Ok(())
    })
}

fn lines_svg(plot: &'static str, panel: &LinePanel) -> Result<String, PlotError> {
    svg(plot, (WIDTH, 2 * PANEL_HEIGHT - 60), |root| {
        draw_lines(root, panel)
    })
}

/// The y range and its labelled points: (low, high, ticks), in log10 units for a log axis.
fn y_axis(values: impl Iterator<Item = f64>, log: bool) -> (f64, f64, Vec<f64>) {
    let values: Vec<f64> = values
        .filter(|v| v.is_finite() && (!log || *v > 0.0))
        .collect();
    if log {
        let lo = values
            .iter()
            .map(|v| v.log10().floor())
            .fold(f64::INFINITY, f64::min);
        let hi = values
            .iter()
            .map(|v| v.log10().ceil())
            .fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi) = if lo.is_finite() {
            (lo, hi.max(lo + 1.0))
        } else {
            (0.0, 1.0)
        };
        let mut ticks = Vec::new();
        for decade in lo as i32..=hi as i32 {
            ticks.push(f64::from(decade));
            // Over one or two decades, 2 and 5 too: otherwise two labels span the plot.
            if hi - lo <= 2.0 && f64::from(decade) < hi {
                ticks.extend([2f64, 5.0].map(|m| f64::from(decade) + m.log10()));
            }
        }
        (lo, hi, ticks)
    } else {
        let max = values.iter().copied().fold(0.0, f64::max);
        let max = if max > 0.0 { max * 1.1 } else { 1.0 };
        let raw = max / 5.0;
        let magnitude = 10f64.powf(raw.log10().floor());
        let step = [1.0, 2.0, 5.0, 10.0]
            .iter()
            .map(|m| m * magnitude)
            .find(|s| *s >= raw)
            .unwrap_or(magnitude * 10.0);
        let ticks = (0..)
            .map(|i| f64::from(i) * step)
            .take_while(|t| *t <= max)
            .collect();
        (0.0, max, ticks)
    }
}

/// A tick label: the value (10^tick on a log axis).
fn tick_label(v: f64, log: bool) -> String {
    let v = if log {
        // Log ticks are 1, 2 or 5 times a power of ten: rebuilt from those, so that 10^3
        // is exactly 1000.
        let decade = v.floor() as i32;
        let mantissa = 10f64.powf(v - f64::from(decade)).round();
        if decade >= 0 {
            mantissa * 10f64.powi(decade)
        } else {
            mantissa / 10f64.powi(-decade)
        }
    } else {
        v
    };
    if v >= 1000.0 && (v / 1000.0).fract() == 0.0 {
        count_label(v as usize)
    } else if v >= 1.0 || v == 0.0 {
        format!("{}", (v * 100.0).round() / 100.0)
    } else {
        let digits = (-v.log10().floor()) as usize;
        format!("{v:.digits$}")
    }
}

fn draw_bars(area: &Area<'_>, panel: &BarPanel) -> Result<(), String> {
    let (plot, legend) = area.split_horizontally(WIDTH - LEGEND_WIDTH);
    let n = panel.groups.len().max(1);
    let values = panel
        .series
        .iter()
        .flat_map(|(_, v)| v.iter().flatten().copied());
    let (lo, hi, ticks) = y_axis(values, panel.log_y);
    let keys: Vec<f64> = (0..n).map(|i| i as f64).collect();
    let mut chart = ChartBuilder::on(&plot)
        .caption(&panel.title, (FONT, 18))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(64)
        .build_cartesian_2d(
            Axis {
                range: -0.5..n as f64 - 0.5,
                ticks: keys,
            },
            Axis {
                range: lo..hi,
                ticks,
            },
        )
        .map_err(|e| e.to_string())?;
    let groups = panel.groups.clone();
    let log = panel.log_y;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(&|x| groups.get(x.round() as usize).cloned().unwrap_or_default())
        .y_label_formatter(&|y| tick_label(*y, log))
        .y_desc(if log {
            format!("{} (log scale)", panel.unit)
        } else {
            panel.unit.clone()
        })
        .label_style((FONT, 13))
        .draw()
        .map_err(|e| e.to_string())?;
    let slot = 0.8 / panel.series.len().max(1) as f64;
    for (s, (_, values)) in panel.series.iter().enumerate() {
        let bars = values.iter().enumerate().filter_map(|(g, v)| {
            let v = (*v)?;
            let y = if log { v.log10() } else { v };
            let x0 = g as f64 - 0.4 + s as f64 * slot;
            Some(Rectangle::new(
                [(x0, lo), (x0 + slot * 0.9, y.max(lo))],
                colour(s).filled(),
            ))
        });
        chart.draw_series(bars).map_err(|e| e.to_string())?;
    }
    draw_legend(
        &legend,
        panel.series.iter().map(|(name, _)| name.as_str()),
        false,
    )
}

fn draw_lines(area: &Area<'_>, panel: &LinePanel) -> Result<(), String> {
    let (plot, legend) = area.split_horizontally(WIDTH - LEGEND_WIDTH);
    let points = || panel.series.iter().flat_map(|(_, p)| p.iter());
    let (xlo, xhi, xticks) = y_axis(points().map(|p| p.0), true);
    let (ylo, yhi, yticks) = y_axis(points().map(|p| p.1), true);
    let mut chart = ChartBuilder::on(&plot)
        .caption(&panel.title, (FONT, 18))
        .margin(8)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(
            Axis {
                range: xlo - 0.1..xhi + 0.1,
                ticks: xticks,
            },
            Axis {
                range: ylo..yhi,
                ticks: yticks,
            },
        )
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_label_formatter(&|x| tick_label(*x, true))
        .y_label_formatter(&|y| tick_label(*y, true))
        .x_desc(format!("{} (log scale)", panel.x_desc))
        .y_desc(format!("{} (log scale)", panel.y_desc))
        .label_style((FONT, 13))
        .draw()
        .map_err(|e| e.to_string())?;
    for (s, (_, points)) in panel.series.iter().enumerate() {
        let logged: Vec<(f64, f64)> = points
            .iter()
            .filter(|(x, y)| *x > 0.0 && *y > 0.0)
            .map(|(x, y)| (x.log10(), y.log10()))
            .collect();
        let style = colour(s).stroke_width(2);
        chart
            .draw_series(LineSeries::new(logged.clone(), style))
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(PointSeries::of_element(
                logged,
                4,
                colour(s).filled(),
                &|c, size, style| EmptyElement::at(c) + Circle::new((0, 0), size, style),
            ))
            .map_err(|e| e.to_string())?;
    }
    draw_legend(
        &legend,
        panel.series.iter().map(|(name, _)| name.as_str()),
        true,
    )
}

/// The series names with their colours, down the right-hand side of a panel.
fn draw_legend<'n>(
    area: &Area<'_>,
    names: impl Iterator<Item = &'n str>,
    lines: bool,
) -> Result<(), String> {
    for (i, name) in names.enumerate() {
        let y = 40 + 22 * i as i32;
        let c = colour(i);
        if lines {
            area.draw(&PathElement::new(
                vec![(6, y + 6), (26, y + 6)],
                c.stroke_width(2),
            ))
        } else {
            area.draw(&Rectangle::new([(10, y), (24, y + 12)], c.filled()))
        }
        .map_err(|e| e.to_string())?;
        area.draw(&Text::new(name.to_string(), (32, y - 1), (FONT, 14)))
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::combined::{BenchRun, Outcome};
    use crate::report::{BenchResult, Machine};

    fn machine() -> Machine {
        Machine::example()
    }

    fn result(name: &str, unit: &str, value: f64, anchor: Option<(&str, f64)>) -> BenchResult {
        let r = BenchResult::from_samples(name, unit, vec![value]);
        match anchor {
            Some((a, v)) => r.with_anchor(a, v),
            None => r,
        }
    }

    fn report(bench: &str, results: Vec<BenchResult>) -> BenchRun {
        BenchRun {
            name: bench.into(),
            command: format!("weir-bench {bench}"),
            seconds: 1.0,
            kept_from_earlier_run: false,
            outcome: Outcome::Ok {
                report: Report {
                    bench: bench.into(),
                    machine: machine(),
                    results,
                    notes: vec![],
                },
            },
        }
    }

    /// A run shaped like a real one, with the result names each benchmark prints.
    fn combined() -> Combined {
        let goal = Some(("goal: VPP-class per-packet cost", 33.3));
        let mut forward = Vec::new();
        for (size, base) in [(64, 1.7), (1500, 1.1)] {
            for (variant, f) in [("weir", 1.0), ("weir_1k_rules", 0.99), ("testpmd_io", 0.97)] {
                let name = format!("forward_{size}B_{variant}");
                forward.push(result(&format!("{name}_mpps"), "Mpps", base * f, None));
                forward.push(result(&format!("{name}_mpps_vs_kernel"), "Mpps", 9.0, None));
                forward.push(result(&format!("{name}_offered_mpps"), "Mpps", 2.0, None));
                forward.push(result(&format!("{name}_p50_us"), "us", 2.0 * f, None));
                forward.push(result(&format!("{name}_p99_us"), "us", 90.0 * f, None));
                forward.push(result(&format!("{name}_p999_us"), "us", 1500.0 * f, None));
                forward.push(result(&format!("{name}_p99_us_vs_goal"), "us", 90.0, None));
            }
        }
        Combined {
            date: "2026-11-25".into(),
            quick: true,
            machine: machine(),
            seconds: 60.0,
            benches: vec![
                report(
                    "pipeline",
                    vec![
                        result("pipeline_udp4_64B_ns", "ns/pkt", 32.0, Some(("goal", 30.0))),
                        result("pipeline_udp4_64B_rate", "Mpps", 31.2, goal),
                        result("pipeline_udp4_64B_net_ns", "ns/pkt", 22.0, None),
                        result("pipeline_udp4_1500B_rate", "Mpps", 30.9, goal),
                        result("harness_only_64B_ns", "ns/pkt", 9.7, None),
                    ],
                ),
                report(
                    "policy",
                    vec![
                        result(
                            "policy_10_rules_classify_rate",
                            "classifications/s",
                            21e6,
                            Some(("dpdk-test-acl avx512x32 (64 rules)", 85e6)),
                        ),
                        result("policy_linear_10_rules_ns", "ns", 39.0, None),
                        result(
                            "policy_1k_rules_classify_rate",
                            "classifications/s",
                            12e6,
                            Some(("rte_acl avx512x32, both directions (8806 rules)", 96e6)),
                        ),
                        result("policy_linear_1k_rules_ns", "ns", 5800.0, None),
                        result("policy_1k_rules_classify_ns", "ns", 77.0, None),
                        result(
                            "policy_1k_rules_node_classify_rate",
                            "classifications/s",
                            14e6,
                            Some(("rte_acl avx512x32, both directions (4639 rules)", 51e6)),
                        ),
                        result("policy_linear_1k_rules_node_ns", "ns", 600.0, None),
                    ],
                ),
                report("forward", forward),
                report(
                    "wireguard",
                    vec![
                        result(
                            "wireguard_64B_weir_seal_mpps",
                            "Mpps",
                            5.1,
                            Some(("ring_chacha20poly1305_seal", 6.3)),
                        ),
                        result(
                            "wireguard_64B_weir_seal_mpps_vs_boringtun",
                            "Mpps",
                            5.1,
                            None,
                        ),
                        result("wireguard_64B_ring_seal_mpps", "Mpps", 6.3, None),
                        result("wireguard_1420B_weir_seal_mpps", "Mpps", 1.2, None),
                        result("wireguard_1420B_ring_seal_mpps", "Mpps", 1.3, None),
                        result("wireguard_1420B_weir_seal_gbps", "Gbit/s", 13.4, None),
                        result("wireguard_e2e_weir_tcp_gbps", "Gbit/s", 3.0, None),
                        result("wireguard_e2e_wireguard_go_tcp_gbps", "Gbit/s", 1.1, None),
                    ],
                ),
                report(
                    "control",
                    vec![
                        result("control_initial_sync_ms", "ms", 130.0, None),
                        result(
                            "control_event_to_snapshot_p50_us",
                            "us",
                            428.0,
                            Some(("full recompute of the same state", 299.0)),
                        ),
                        result(
                            "control_event_to_snapshot_p99_us",
                            "us",
                            642.0,
                            Some(("goal: 10 ms", 10_000.0)),
                        ),
                    ],
                ),
                report(
                    "attach",
                    vec![
                        result(
                            "attach_weir_p50_ms",
                            "ms",
                            179.0,
                            Some(("bridge + host-local p50", 64.8)),
                        ),
                        result(
                            "attach_weir_p99_ms",
                            "ms",
                            399.0,
                            Some(("bridge + host-local p99", 67.5)),
                        ),
                        result(
                            "attach_weir_p99_vs_goal_ms",
                            "ms",
                            399.0,
                            Some(("goal: 100 ms", 100.0)),
                        ),
                    ],
                ),
            ],
        }
    }

    fn panel<'a>(panels: &'a [BarPanel], title_start: &str) -> &'a BarPanel {
        panels
            .iter()
            .find(|p| p.title.starts_with(title_start))
            .unwrap_or_else(|| panic!("no panel {title_start}"))
    }

    fn series<'a>(p: &'a BarPanel, name: &str) -> &'a [Option<f64>] {
        &p.series
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no series {name} in {p:?}"))
            .1
    }

    /// Every text of an SVG document, parsed as XML (which fails on anything not well
    /// formed).
    fn svg_texts(svg: &str) -> Vec<String> {
        let doc = roxmltree::Document::parse(svg).expect("the plot is well-formed XML");
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        assert!(root.attribute("width").is_some() && root.attribute("height").is_some());
        doc.descendants()
            .filter(|n| n.has_tag_name("text"))
            .filter_map(|n| n.text())
            .map(|t| t.trim().to_string())
            .collect()
    }

    #[test]
    fn throughput_groups_by_frame_size_with_every_forwarder() {
        let panels = throughput_panels(&combined());
        let fwd = panel(&panels, "forward");
        assert_eq!(fwd.groups, ["64 B", "1500 B"]);
        let names: Vec<&str> = fwd.series.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["weir", "weir 1k rules", "testpmd io"]);
        assert_eq!(
            series(fwd, "weir 1k rules"),
            [Some(1.7 * 0.99), Some(1.1 * 0.99)]
        );
        let pipe = panel(&panels, "pipeline");
        assert_eq!(pipe.groups, ["64 B", "1500 B"]);
        assert_eq!(
            series(pipe, "weir, harness included"),
            [Some(31.2), Some(30.9)]
        );
        assert_eq!(
            series(pipe, "weir, net of harness"),
            [Some(1e3 / 22.0), None]
        );
        assert_eq!(
            series(pipe, "goal: VPP-class per-packet cost"),
            [Some(33.3), Some(33.3)]
        );
        let wg = panel(&panels, "WireGuard seal");
        assert_eq!(wg.groups, ["64 B", "1420 B"]);
        assert_eq!(wg.series.len(), 2, "{wg:?}");
        assert_eq!(series(wg, "ring seal"), [Some(6.3), Some(1.3)]);
        let e2e = panel(&panels, "WireGuard end to end");
        assert_eq!(series(e2e, "wireguard-go"), [Some(1.1)]);
        assert_eq!(series(e2e, "weir, WireGuard on"), [Some(3.0)]);
        let names: Vec<&str> = pipe.series.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "weir, harness included",
                "weir, net of harness",
                "goal: VPP-class per-packet cost"
            ]
        );
    }

    #[test]
    fn policy_rates_by_rule_count() {
        let p = policy_panel(&combined()).unwrap();
        let get = |name: &str| p.series.iter().find(|(n, _)| n == name).unwrap().1.clone();
        assert_eq!(get("weir"), [(10.0, 21.0), (1000.0, 12.0)]);
        assert_eq!(get("rte_acl"), [(10.0, 85.0), (1000.0, 96.0)]);
        assert_eq!(get("weir, one node"), [(1000.0, 14.0)]);
        assert_eq!(get("rte_acl, one node"), [(1000.0, 51.0)]);
        let linear = get("linear scan");
        assert_eq!(linear.len(), 2, "a node's linear scan is not the cluster's");
        assert_eq!(linear[0].0, 10.0);
        assert!((linear[1].1 - 1e3 / 5800.0).abs() < 1e-12);
    }

    #[test]
    fn latency_percentiles_beside_their_anchors() {
        let panels = latency_panels(&combined());
        let control = panel(&panels, "control");
        assert_eq!(control.groups, ["p50", "p99"]);
        assert_eq!(series(control, "weir"), [Some(428.0), Some(642.0)]);
        assert_eq!(
            series(control, "full recompute of the same state"),
            [Some(299.0), None]
        );
        let attach = panel(&panels, "attach");
        assert_eq!(
            attach.groups,
            ["p50", "p99"],
            "the vs-goal figure is left out"
        );
        assert_eq!(
            series(attach, "bridge + host-local"),
            [Some(64.8), Some(67.5)]
        );
        let fwd = panel(&panels, "forward");
        assert_eq!(
            fwd.groups,
            [
                "64 B p50",
                "64 B p99",
                "64 B p99.9",
                "1500 B p50",
                "1500 B p99",
                "1500 B p99.9"
            ]
        );
        assert_eq!(series(fwd, "testpmd io")[2], Some(1500.0 * 0.97));
        assert_eq!(fwd.unit, "us");
    }

    #[test]
    fn plots_are_valid_svg_with_their_series() {
        let c = combined();
        let plots = render(&c).unwrap();
        let stems: Vec<&str> = plots.iter().map(|p| p.stem).collect();
        assert_eq!(stems, ["throughput", "policy", "latency"]);
        let expect = [
            (
                "throughput",
                vec![
                    "weir, harness included",
                    "weir 1k rules",
                    "testpmd io",
                    "ring seal",
                    "64 B",
                    "1420 B",
                ],
            ),
            ("policy", vec!["weir", "linear scan", "rte_acl", "1k"]),
            (
                "latency",
                vec![
                    "full recompute of the same state",
                    "bridge + host-local",
                    "weir-cni",
                ],
            ),
        ];
        for (plot, (stem, names)) in plots.iter().zip(expect) {
            assert_eq!(plot.stem, stem);
            let texts = svg_texts(&plot.svg);
            for name in names {
                assert!(
                    texts.iter().any(|t| t == name),
                    "{stem}: no {name:?} in {texts:?}"
                );
            }
        }
        // A series name with XML's special characters still gives a well-formed document.
        let mut c = combined();
        if let Some(BenchRun {
            outcome: Outcome::Ok { report },
            ..
        }) = c.benches.iter_mut().find(|b| b.name == "attach")
        {
            report.results[0] = result(
                "attach_weir_p50_ms",
                "ms",
                1.0,
                Some(("<bridge> & \"host-local\" p50", 2.0)),
            );
        }
        let latency = render(&c).unwrap().pop().unwrap();
        assert!(svg_texts(&latency.svg).contains(&"<bridge> & \"host-local\"".to_string()));
    }

    #[test]
    fn a_failed_benchmark_leaves_its_panels_out() {
        let mut c = combined();
        for b in &mut c.benches {
            if b.name != "control" {
                b.outcome = Outcome::Failed { error: "x".into() };
            }
        }
        assert!(throughput_panels(&c).is_empty());
        assert!(policy_panel(&c).is_none());
        let plots = render(&c).unwrap();
        assert_eq!(plots.len(), 1);
        assert_eq!(plots[0].stem, "latency");
        let texts = svg_texts(&plots[0].svg);
        assert!(texts.iter().any(|t| t == "weir"));
        assert!(!texts.iter().any(|t| t == "weir-cni"));
    }

    #[test]
    fn count_labels_parse_back() {
        for n in [1, 10, 999, 1000, 10_000, 100_000, 1_234] {
            assert_eq!(parse_count_label(&count_label(n)), Some(n));
        }
        assert_eq!(parse_count_label("k"), None);
        assert_eq!(parse_count_label("1m"), None);
    }

    #[test]
    fn percentiles_and_axis_ticks() {
        assert_eq!(percentile_of("p50_us").as_deref(), Some("p50"));
        assert_eq!(percentile_of("p999_ms").as_deref(), Some("p99.9"));
        assert_eq!(percentile_of("p99_vs_goal_ms"), None);
        assert_eq!(percentile_of("pipeline_us"), None);
        assert_eq!(
            strip_percentile("bridge + host-local p99"),
            "bridge + host-local"
        );
        assert_eq!(strip_percentile("goal: 10 ms"), "goal: 10 ms");
        let (lo, hi, ticks) = y_axis([2.0, 1500.0].into_iter(), true);
        assert_eq!((lo, hi), (0.0, 4.0));
        assert_eq!(ticks, [0.0, 1.0, 2.0, 3.0, 4.0]);
        assert_eq!(tick_label(3.0, true), "1k");
        assert_eq!(tick_label(-2.0, true), "0.01");
        // One decade of data gets 2 and 5 between the powers of ten.
        let (lo, hi, ticks) = y_axis([1980.0, 9862.0].into_iter(), true);
        assert_eq!((lo, hi), (3.0, 4.0));
        let labels: Vec<String> = ticks.iter().map(|t| tick_label(*t, true)).collect();
        assert_eq!(labels, ["1k", "2k", "5k", "10k"]);
        assert_eq!(tick_label(2f64.log10() - 1.0, true), "0.2");
        let (lo, hi, ticks) = y_axis([1.7, 0.3].into_iter(), false);
        assert_eq!(lo, 0.0);
        assert!(hi >= 1.7 && ticks.len() >= 3 && ticks.iter().all(|t| *t <= hi));
    }
}
