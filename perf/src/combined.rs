//! One `weir-bench all` run as one JSON object: the machine, and for every benchmark its
//! report or why it has none. Written to `results/<YYYY-MM-DD>-<host>.json` (a `--quick`
//! run to `<YYYY-MM-DD>-<host>-quick.json`, so that it never overwrites a full run).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::report::{Machine, Report};

/// A whole `weir-bench all` run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Combined {
    /// The UTC date the run started on, `YYYY-MM-DD`.
    pub date: String,
    /// Whether every benchmark ran with the small `--quick` parameters.
    pub quick: bool,
    pub machine: Machine,
    /// Wall time of the whole run.
    pub seconds: f64,
    /// The benchmarks in the order they ran.
    pub benches: Vec<BenchRun>,
}

/// One benchmark of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchRun {
    /// The subcommand's name (`pipeline`, `policy`, ...).
    pub name: String,
    /// The command line that runs this benchmark alone with the same parameters.
    pub command: String,
    /// Wall time of this benchmark, anchors included.
    pub seconds: f64,
    /// Whether `--skip` kept this outcome from the earlier run that wrote the same file.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kept_from_earlier_run: bool,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// How a benchmark ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    Ok {
        report: Report,
    },
    /// It could not run or stopped with an error (not root, a missing DPDK program, ...).
    Failed {
        error: String,
    },
    /// Left out with `--skip`, and no earlier outcome to keep.
    Skipped,
}

impl Combined {
    /// The report of benchmark `name`, if it ran (or was kept from an earlier run).
    pub fn report(&self, name: &str) -> Option<&Report> {
        self.benches
            .iter()
            .find(|b| b.name == name)
            .and_then(|b| match &b.outcome {
                Outcome::Ok { report } => Some(report),
                Outcome::Failed { .. } | Outcome::Skipped => None,
            })
    }

    /// The benchmarks that failed.
    pub fn failed(&self) -> impl Iterator<Item = &BenchRun> {
        self.benches
            .iter()
            .filter(|b| matches!(b.outcome, Outcome::Failed { .. }))
    }

    /// Replaces every skipped benchmark with its outcome in `earlier` (the file this run is
    /// about to overwrite), if that one has a report: a benchmark can so be rerun alone
    /// (`--skip` all the others) without losing the others' figures.
    pub fn keep_skipped_from(&mut self, earlier: &Combined) {
        for bench in &mut self.benches {
            if bench.outcome != Outcome::Skipped {
                continue;
            }
            if let Some(old) = earlier
                .benches
                .iter()
                .find(|b| b.name == bench.name && matches!(b.outcome, Outcome::Ok { .. }))
            {
                *bench = BenchRun {
                    kept_from_earlier_run: true,
                    ..old.clone()
                };
            }
        }
    }

    /// The JSON document, indented so that a committed file diffs line by line.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).expect("a combined run serialises")
    }

    /// Reads a document written by [`Combined::to_json_pretty`].
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// `<date>-<host>.json`, or `<date>-<host>-quick.json` for a quick run.
pub fn file_name(date: &str, host: &str, quick: bool) -> String {
    format!("{}.json", file_stem(date, host, quick))
}

/// `<date>-<host>` or `<date>-<host>-quick`.
pub fn file_stem(date: &str, host: &str, quick: bool) -> String {
    let suffix = if quick { "-quick" } else { "" };
    format!("{date}-{host}{suffix}")
}

/// A host name fit for a file name: the short name (up to the first dot), lower case, every
/// character outside `[a-z0-9-]` turned into `-`, runs of `-` collapsed, none at either
/// end; `unknown` if nothing is left.
pub fn short_host(hostname: &str) -> String {
    let short = hostname.trim().split('.').next().unwrap_or_default();
    let mut out = String::with_capacity(short.len());
    for c in short.chars().flat_map(char::to_lowercase) {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if !(c == '-' && (out.is_empty() || out.ends_with('-'))) {
            out.push(c);
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    if out.is_empty() {
        "unknown".to_string()
    } else {
        out
    }
}

/// The UTC calendar date of `t` as `YYYY-MM-DD` (1970-01-01 for times before the epoch).
pub fn utc_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Year, month, day of the day `days` after 1970-01-01 in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`, "chrono-Compatible Low-Level Date Algorithms").
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::report::BenchResult;

    fn machine() -> Machine {
        Machine {
            hostname: "bench-1.example".into(),
            cpu_model: "test CPU".into(),
            logical_cpus: 2,
            kernel: "6.18".into(),
            tsc_mhz: 2600.0,
            pinned_cpu: Some(1),
        }
    }

    fn report(bench: &str, value: f64) -> Report {
        Report {
            bench: bench.into(),
            machine: machine(),
            results: vec![BenchResult::from_samples(
                format!("{bench}_x_ns"),
                "ns",
                vec![value, value * 2.0],
            )
            .with_anchor("anchor", value * 3.0)],
            notes: vec![format!("{bench} note")],
        }
    }

    fn run(name: &str, outcome: Outcome) -> BenchRun {
        BenchRun {
            name: name.into(),
            command: format!("weir-bench {name}"),
            seconds: 1.5,
            kept_from_earlier_run: false,
            outcome,
        }
    }

    fn combined() -> Combined {
        Combined {
            date: "2026-11-25".into(),
            quick: true,
            machine: machine(),
            seconds: 42.0,
            benches: vec![
                run(
                    "pipeline",
                    Outcome::Ok {
                        report: report("pipeline", 7.25),
                    },
                ),
                run(
                    "forward",
                    Outcome::Failed {
                        error: "needs root".into(),
                    },
                ),
                run("attach", Outcome::Skipped),
            ],
        }
    }

    #[test]
    fn the_combined_json_round_trips() {
        let c = combined();
        let text = c.to_json_pretty();
        let back = Combined::from_json(&text).unwrap();
        assert_eq!(back, c);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["benches"][0]["status"], "ok");
        assert_eq!(v["benches"][0]["report"]["results"][0]["value"], 10.875);
        assert_eq!(v["benches"][1]["status"], "failed");
        assert_eq!(v["benches"][1]["error"], "needs root");
        assert_eq!(v["benches"][2]["status"], "skipped");
        assert_eq!(v["machine"]["hostname"], "bench-1.example");
    }

    #[test]
    fn reports_and_failures_are_found_by_name() {
        let c = combined();
        assert_eq!(c.report("pipeline").unwrap().bench, "pipeline");
        assert!(c.report("forward").is_none());
        assert!(c.report("attach").is_none());
        let failed: Vec<&str> = c.failed().map(|b| b.name.as_str()).collect();
        assert_eq!(failed, ["forward"]);
    }

    #[test]
    fn a_skipped_benchmark_keeps_an_earlier_report_but_not_an_earlier_failure() {
        let mut earlier = combined();
        earlier.benches[2].outcome = Outcome::Ok {
            report: report("attach", 3.0),
        };
        let mut now = combined();
        now.benches[0].outcome = Outcome::Skipped;
        now.benches[1].outcome = Outcome::Skipped;
        let fresh = Outcome::Ok {
            report: report("attach", 5.0),
        };
        now.benches[2].outcome = fresh.clone();
        // The earlier pipeline report has other figures than a fresh one would.
        earlier.benches[0].outcome = Outcome::Ok {
            report: report("pipeline", 99.0),
        };
        now.keep_skipped_from(&earlier);
        assert_eq!(now.report("pipeline"), earlier.report("pipeline"));
        assert!(now.benches[0].kept_from_earlier_run);
        assert_eq!(
            now.benches[1].outcome,
            Outcome::Skipped,
            "failures are not kept"
        );
        assert!(!now.benches[1].kept_from_earlier_run);
        // attach ran now: its fresh outcome stays.
        assert_eq!(now.benches[2].outcome, fresh);
        assert!(!now.benches[2].kept_from_earlier_run);
        let back = Combined::from_json(&now.to_json_pretty()).unwrap();
        assert!(back.benches[0].kept_from_earlier_run);
    }

    #[test]
    fn host_names_are_sanitised_for_file_names() {
        assert_eq!(short_host("vm"), "vm");
        assert_eq!(short_host("Bench-Node_07.cluster.local"), "bench-node-07");
        assert_eq!(short_host("  ci runner (2)\n"), "ci-runner-2");
        assert_eq!(short_host("--x--y--"), "x-y");
        assert_eq!(short_host("Über"), "ber");
        assert_eq!(short_host("..."), "unknown");
        assert_eq!(short_host(""), "unknown");
        for name in ["a.b", "A B", "x/y\\z", "é", "__", "h\u{0}st"] {
            let s = short_host(name);
            assert!(!s.is_empty());
            assert!(
                s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{name:?} -> {s:?}"
            );
            assert!(!s.starts_with('-') && !s.ends_with('-') && !s.contains("--"));
        }
    }

    #[test]
    fn a_quick_run_never_shares_a_full_runs_file_name() {
        assert_eq!(file_name("2026-11-25", "vm", false), "2026-11-25-vm.json");
        assert_eq!(
            file_name("2026-11-25", "vm", true),
            "2026-11-25-vm-quick.json"
        );
        assert_ne!(
            file_name("2026-11-25", "vm", true),
            file_name("2026-11-25", "vm", false)
        );
    }

    #[test]
    fn utc_dates_of_known_instants() {
        let at = |s: u64| utc_date(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01");
        assert_eq!(at(86_399), "1970-01-01");
        assert_eq!(at(86_400), "1970-01-02");
        // 2000-02-29T00:00:00Z, a leap day of a century year divisible by 400.
        assert_eq!(at(951_782_400), "2000-02-29");
        assert_eq!(at(951_782_400 + 86_400), "2000-03-01");
        // 2023-11-14T22:13:20Z.
        assert_eq!(at(1_700_000_000), "2023-11-14");
        // 2100-03-01T00:00:00Z: 2100 is not a leap year.
        assert_eq!(at(4_107_542_400), "2100-03-01");
        assert_eq!(at(4_107_542_400 - 1), "2100-02-28");
    }
}
