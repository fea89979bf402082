//! Benchmark reports: the human table and the one-object JSON every `weir-bench` subcommand
//! prints with `--json`:
//! `{"bench": NAME, "machine": {...}, "results": [{"name", "value", "unit", "anchor":
//! {"name", "value"}, "ratio", ...}]}`.
//!
//! A figure is the median of several runs; its range and the raw samples travel with it so
//! a reader can judge the noise of a shared VM.

use serde::{Deserialize, Serialize};

/// What the benchmark ran on. Absolute figures only mean something beside this.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub hostname: String,
    pub cpu_model: String,
    pub logical_cpus: usize,
    pub kernel: String,
    /// TSC frequency as the kernel reports it ("cpu MHz"), used to turn cycles into time.
    pub tsc_mhz: f64,
    /// The CPU the measuring thread was pinned to, if any.
    pub pinned_cpu: Option<usize>,
}

impl Machine {
    /// "CPU model, N CPUs, kernel K, TSC T MHz", for tables and reports.
    pub fn summary(&self) -> String {
        format!(
            "{}, {} CPUs, kernel {}, TSC {:.0} MHz",
            self.cpu_model, self.logical_cpus, self.kernel, self.tsc_mhz
        )
    }

    /// The CPU the measuring thread was pinned to, or "none".
    pub fn pinned(&self) -> String {
        self.pinned_cpu
            .map_or_else(|| "none".to_string(), |c| c.to_string())
    }

    /// A fixed machine for tests.
    #[cfg(test)]
    pub(crate) fn example() -> Machine {
        Machine {
            hostname: "vm".into(),
            cpu_model: "test CPU".into(),
            logical_cpus: 2,
            kernel: "6.18".into(),
            tsc_mhz: 2600.0,
            pinned_cpu: Some(1),
        }
    }

    /// Reads the machine description from `/proc` and `uname`-like sources. Fields that
    /// cannot be read are reported as "unknown" rather than failing the benchmark.
    pub fn detect(pinned_cpu: Option<usize>) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let field = |name: &str| {
            cpuinfo
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        };
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".to_string())
        };
        Machine {
            hostname: read("/proc/sys/kernel/hostname"),
            cpu_model: field("model name").unwrap_or_else(|| "unknown".to_string()),
            // Count from /proc: available_parallelism() reports the pinned thread's mask.
            logical_cpus: cpuinfo
                .lines()
                .filter(|l| l.starts_with("processor"))
                .count()
                .max(1),
            kernel: read("/proc/sys/kernel/osrelease"),
            tsc_mhz: field("cpu MHz").and_then(|v| v.parse().ok()).unwrap_or(0.0),
            pinned_cpu,
        }
    }
}

/// The figure a result is compared with, measured in the same run (or, when labelled so in
/// its name, a stated goal).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Anchor {
    pub name: String,
    pub value: f64,
}

/// One reported figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchResult {
    pub name: String,
    /// Median of `samples`.
    pub value: f64,
    pub unit: String,
    pub anchor: Option<Anchor>,
    /// `value / anchor.value` for throughput units, `anchor.value / value` for time units,
    /// so that a ratio above 1.0 always means weir is better.
    pub ratio: Option<f64>,
    pub min: f64,
    pub max: f64,
    pub samples: Vec<f64>,
}

impl BenchResult {
    /// A result from raw samples (at least one). Higher is better unless `unit` is a time
    /// unit (`ns`, `us`, `ms`, `s`, or ends in `/op`, `/pkt`, `/lookup`).
    ///
    /// # Panics
    /// If `samples` is empty: a benchmark that measured nothing is a bug in the benchmark.
    pub fn from_samples(
        name: impl Into<String>,
        unit: impl Into<String>,
        samples: Vec<f64>,
    ) -> Self {
        assert!(!samples.is_empty(), "a result needs at least one sample");
        let (value, min, max) = median_min_max(&samples);
        BenchResult {
            name: name.into(),
            value,
            unit: unit.into(),
            anchor: None,
            ratio: None,
            min,
            max,
            samples,
        }
    }

    /// Sets the anchor and computes the ratio (above 1.0 = weir better).
    pub fn with_anchor(mut self, name: impl Into<String>, value: f64) -> Self {
        let ratio = if value == 0.0 || self.value == 0.0 {
            None
        } else if lower_is_better(&self.unit) {
            Some(value / self.value)
        } else {
            Some(self.value / value)
        };
        self.anchor = Some(Anchor {
            name: name.into(),
            value,
        });
        self.ratio = ratio;
        self
    }
}

/// Whether smaller figures are better for this unit: times, memory (`B`, `KiB`, `MiB`,
/// `GiB`) and `slowdown` (how many times slower one case is than another).
pub fn lower_is_better(unit: &str) -> bool {
    matches!(
        unit,
        "ns" | "us" | "ms" | "s" | "cycles" | "B" | "KiB" | "MiB" | "GiB" | "slowdown"
    ) || unit.ends_with("/op")
        || unit.ends_with("/pkt")
        || unit.ends_with("/lookup")
}

/// Median, minimum and maximum of a non-empty sample set (NaN-free).
///
/// # Panics
/// If `samples` is empty.
pub fn median_min_max(samples: &[f64]) -> (f64, f64, f64) {
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    (median, s[0], s[n - 1])
}

/// The nearest-rank percentile `p` (0.0..=1.0) of `samples`, in any order; NaN when
/// there are none.
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = (s.len() as f64 * p).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// A whole report: one benchmark, its machine, its results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub bench: String,
    pub machine: Machine,
    pub results: Vec<BenchResult>,
    /// Free-form remarks a reader needs (generator limits, fallbacks taken).
    pub notes: Vec<String>,
}

impl Report {
    /// The JSON object, on one line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("report serialises")
    }

    /// The human table.
    pub fn to_table(&self) -> String {
        let m = &self.machine;
        let mut out = format!(
            "weir-bench {} on {} ({}, pinned to CPU {})\n",
            self.bench,
            m.hostname,
            m.summary(),
            m.pinned(),
        );
        out.push_str(&format!(
            "{:<44} {:>14} {:<10} {:>23}   {:<36} {:>12} {:>7}\n",
            "result", "median", "unit", "[min - max]", "anchor", "anchor value", "ratio"
        ));
        for r in &self.results {
            let (an, av) = r
                .anchor
                .as_ref()
                .map_or(("-".to_string(), "-".to_string()), |a| {
                    (a.name.clone(), fmt_num(a.value))
                });
            out.push_str(&format!(
                "{:<44} {:>14} {:<10} {:>23}   {:<36} {:>12} {:>7}\n",
                r.name,
                fmt_num(r.value),
                r.unit,
                format!("[{} - {}]", fmt_num(r.min), fmt_num(r.max)),
                an,
                av,
                r.ratio
                    .map_or_else(|| "-".to_string(), |x| format!("{x:.2}x")),
            ));
        }
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        out
    }
}

/// "100k" for 100000, the plain number otherwise: how result names spell counts.
pub fn count_label(n: usize) -> String {
    if n >= 1000 && n % 1000 == 0 {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

/// A figure as the tables print it: three decimals in millions from 1e6 up, whole numbers
/// from 100 up, two decimals below.
pub fn fmt_num(v: f64) -> String {
    if v.abs() >= 1e6 {
        format!("{:.3}e6", v / 1e6)
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn median_of_odd_and_even_sets() {
        assert_eq!(median_min_max(&[3.0, 1.0, 2.0]), (2.0, 1.0, 3.0));
        assert_eq!(median_min_max(&[4.0, 1.0, 2.0, 3.0]), (2.5, 1.0, 4.0));
    }

    #[test]
    fn ratio_above_one_means_weir_better_for_both_kinds_of_unit() {
        let fast = BenchResult::from_samples("x", "ns", vec![5.0]).with_anchor("a", 10.0);
        assert_eq!(fast.ratio, Some(2.0));
        let rate = BenchResult::from_samples("x", "Mpps", vec![20.0]).with_anchor("a", 10.0);
        assert_eq!(rate.ratio, Some(2.0));
        let small = BenchResult::from_samples("x", "MiB", vec![5.0]).with_anchor("a", 10.0);
        assert_eq!(small.ratio, Some(2.0));
        let flat = BenchResult::from_samples("x", "slowdown", vec![1.2]).with_anchor("a", 1.5);
        assert!(flat.ratio.unwrap() > 1.0);
    }

    #[test]
    fn json_has_the_documented_shape() {
        let r = Report {
            bench: "t".into(),
            machine: Machine::detect(None),
            results: vec![BenchResult::from_samples("x", "ns", vec![1.0]).with_anchor("a", 2.0)],
            notes: vec![],
        };
        let v: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(v["bench"], "t");
        assert_eq!(v["results"][0]["anchor"]["name"], "a");
        assert_eq!(v["results"][0]["ratio"], 2.0);
        assert!(v["machine"]["logical_cpus"].as_u64().unwrap() >= 1);
    }
}
