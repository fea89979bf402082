//! The `rte_acl` anchor: DPDK's packet classifier deciding both directions of the policy.
//!
//! `rte_acl` is the packet classifier weir's is held against. `dpdk-test-acl` cannot be
//! held to the same job: it puts every rule in every category, so it returns one first
//! match over egress and ingress together, and it prints no answers to check. So the
//! anchor is a small C program over `librte_acl` (`acl_harness.c`, built here with `cc`
//! and `pkg-config libdpdk` from Debian's `dpdk-dev`) that classifies each probe in both
//! directions in one `rte_acl_classify` call, the source's egress rules as category 0 and
//! the destination's ingress rules as category 1, and writes its answers out. Its rules
//! are the flattened ones with `Pass` and `Log` compiled out ([`first_match_only`]); the
//! first run at each size writes every answer, and one that differs from weir's verdict
//! stops the benchmark ([`PolicyBenchError::WrongAnswer`]).
//!
//! This module writes its rule and trace files from the flattened rules and the probes,
//! runs it per size and round within a time and memory budget (a build that fails, runs
//! out of memory or takes too long is a note, not an error), and reads its rate, build
//! time and memory from its output and log.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use weir_dataplane::policy::Verdict;

use super::generate::Probe;
use super::linear::{first_match_only, FlatAction, FlatRule, FlatRules, Tuple};
use super::measure::AclFigures;
use super::{io_error, PolicyBenchConfig, PolicyBenchError};
use crate::dpdk::{tail, HugepageReservation};
use crate::tools::find_in_path;

/// A first-round anchor run longer than this stops the other algorithms from
/// running at that size.
pub const ACL_ALL_ALGS_MAX: Duration = Duration::from_secs(10);
/// How long the anchor's runs of one size may take together (at least one runs).
pub const ACL_BUDGET: Duration = Duration::from_secs(60);
/// The share of the available memory the anchor's heap (its build) may take.
pub const ACL_DATA_LIMIT_FRACTION: f64 = 0.5;
/// The most rules (before splitting ranges into prefixes) that compiling `Pass` out may
/// make; past it the anchor does not run at that size, and a note says so.
pub const ACL_PLAIN_RULES_MAX: usize = 4_000_000;
/// The anchor's source, built at run time against the installed DPDK.
const HARNESS_SOURCE: &str = include_str!("acl_harness.c");

/// Builds the anchor (`acl_harness.c`) in `workdir` with `cc` and `pkg-config libdpdk`;
/// returns the program's path, or why it could not be built.
pub fn build_harness(workdir: &Path) -> Result<PathBuf, String> {
    let source = workdir.join("weir-acl.c");
    let program = workdir.join("weir-acl");
    std::fs::write(&source, HARNESS_SOURCE)
        .map_err(|e| format!("writing {}: {e}", source.display()))?;
    let flags = Command::new("pkg-config")
        .args(["--cflags", "--libs", "libdpdk"])
        .output()
        .map_err(|e| format!("running pkg-config (package pkg-config): {e}"))?;
    if !flags.status.success() {
        return Err(format!(
            "pkg-config knows no libdpdk (package dpdk-dev): {}",
            String::from_utf8_lossy(&flags.stderr).trim()
        ));
    }
    let flags = String::from_utf8_lossy(&flags.stdout).into_owned();
    let built = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&program)
        .arg(&source)
        .args(flags.split_whitespace())
        .output()
        .map_err(|e| format!("running cc (package gcc): {e}"))?;
    let _ = std::fs::remove_file(&source);
    if !built.status.success() {
        return Err(format!(
            "cc could not build the rte_acl anchor: {}",
            tail(&String::from_utf8_lossy(&built.stderr), 5)
        ));
    }
    Ok(program)
}

/// The CIDR prefixes that exactly cover `lo..=hi`, fewest first-to-last (at most 62).
pub fn interval_prefixes(lo: u32, hi: u32) -> Vec<(u32, u8)> {
    let mut out = Vec::new();
    let (mut cur, end) = (u64::from(lo), u64::from(hi));
    while cur <= end {
        let mut bits = if cur == 0 {
            32
        } else {
            cur.trailing_zeros().min(32)
        };
        while cur + (1u64 << bits) - 1 > end {
            bits -= 1;
        }
        out.push((cur as u32, (32 - bits) as u8));
        cur += 1u64 << bits;
    }
    out
}

/// Writes plain first-match rules (`Allow` and `Deny` only, see [`first_match_only`]) as
/// the anchor's rule file: per line `category priority userdata src srclen dst dstlen splo
/// sphi dplo dphi proto mask`, egress rules in category 0 (mask 1), ingress rules in
/// category 1 (mask 2), priority falling in list order so the first match wins, userdata 1
/// for Allow and 2 for Deny; each address interval split into prefixes. Returns the number
/// of lines.
///
/// # Errors
/// If the file cannot be written.
pub fn write_acl_rules(
    path: &Path,
    egress: &[FlatRule],
    ingress: &[FlatRule],
) -> io::Result<usize> {
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut lines = 0;
    for (category, section) in [(1, egress), (2, ingress)] {
        for (at, r) in section.iter().enumerate() {
            let priority = ACL_MAX_PRIORITY - at.min(ACL_MAX_PRIORITY as usize - 1) as u32;
            let user = if r.action == FlatAction::Deny { 2 } else { 1 };
            let mask = if r.proto == 0 { 0 } else { 0xff };
            let srcs = interval_prefixes(r.src.0, r.src.1);
            let dsts = interval_prefixes(r.dst.0, r.dst.1);
            for &(s, sl) in &srcs {
                for &(d, dl) in &dsts {
                    writeln!(
                        w,
                        "{category} {priority} {user} {s} {sl} {d} {dl} {} {} {} {} {} {mask}",
                        r.sport.0, r.sport.1, r.dport.0, r.dport.1, r.proto
                    )?;
                    lines += 1;
                }
            }
        }
    }
    w.flush()?;
    Ok(lines)
}

/// `RTE_ACL_MAX_PRIORITY`.
const ACL_MAX_PRIORITY: u32 = 0x1fff_ffff;

/// The verdict of the anchor's answer for one probe (`egress ingress` userdata: 0 no match,
/// 1 Allow, 2 Deny): a Deny in either direction denies.
pub fn acl_verdict(line: &str) -> Option<Verdict> {
    let mut it = line.split_whitespace().map(|v| v.parse::<u32>().ok());
    let (e, i) = (it.next()??, it.next()??);
    if e > 2 || i > 2 || it.next().is_some() {
        return None;
    }
    Some(if e == 2 || i == 2 {
        Verdict::Deny
    } else {
        Verdict::Allow
    })
}

/// Writes probes as the anchor's trace file: `src dst sport dport proto`, addresses as
/// host-order numbers. IPv6 probes are left out.
///
/// # Errors
/// If the file cannot be written.
pub fn write_acl_trace(path: &Path, probes: &[Probe]) -> io::Result<()> {
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path)?);
    for t in probes.iter().filter_map(|p| Tuple::of(&p.key)) {
        writeln!(w, "{} {} {} {} {}", t.src, t.dst, t.sport, t.dport, t.proto)?;
    }
    w.flush()
}

/// The `pkt/sec` figure of the anchor's `search_ip5tuples` line.
pub fn parse_acl_rate(stdout: &str) -> Option<f64> {
    let line = stdout.lines().find(|l| l.contains("search_ip5tuples"))?;
    let (before, _) = line.split_once(" pkt/sec")?;
    before.rsplit([' ', ',']).next()?.parse().ok()
}

/// The anchor's own build time (`build_ms` line: `rte_acl_create`, adding the rules,
/// `rte_acl_build`), in ms.
pub fn parse_acl_build_ms(stdout: &str) -> Option<f64> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("build_ms "))
        .and_then(|v| v.trim().parse().ok())
}

/// The "total" of `rte_acl`'s runtime memory footprint (logged at debug level), in bytes.
pub fn parse_acl_memory(log: &str) -> Option<usize> {
    let rest = &log[log.find("runtime memory footprint")?..];
    rest.lines()
        .find_map(|l| l.trim().strip_prefix("total:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// `rte_acl` classification algorithms, best last.
const ACL_ALGS: [&str; 5] = ["scalar", "sse", "avx2", "avx512x16", "avx512x32"];

/// The `rte_acl` anchor: its runs, its hugepages, its notes.
pub(super) struct Acl {
    bin: PathBuf,
    prlimit: Option<PathBuf>,
    cpu: usize,
    workdir: PathBuf,
    file_prefix: String,
    timeout: Duration,
    /// Where the thread reading its output runs: any CPU but `cpu`.
    reader_cpu: Option<usize>,
    keep_files: bool,
    unsupported: BTreeSet<&'static str>,
    /// What `HugepageReservation` said at each size (raised, or why not).
    hugepage_notes: Vec<String>,
}

/// One size's DPDK inputs and state.
pub(super) struct AclCase {
    label: String,
    rules_file: PathBuf,
    trace_file: PathBuf,
    log_file: PathBuf,
    result_file: PathBuf,
    /// weir's verdict for each line of the trace, which the first run's answers must equal.
    expected: Vec<Verdict>,
    /// Whether a run's answers were checked.
    checked: bool,
    /// Rule lines (after splitting ranges into prefixes).
    pub(super) rules: usize,
    /// Plain first-match rules, before splitting.
    pub(super) plain: usize,
    traces: usize,
    mem_mb: usize,
    no_huge: bool,
    /// Puts `nr_hugepages` back when the size is done, however it ends.
    _hugepages: Option<HugepageReservation>,
    /// Time spent in this size's runs.
    spent: Duration,
    /// Why the runs stopped, once they did.
    stopped: Option<String>,
    /// Runs that measured something.
    runs: usize,
    all_algs: bool,
}

/// One anchor run.
enum AclOutcome {
    Ran {
        ns: f64,
        build_ms: Option<f64>,
        memory: Option<usize>,
        wall: Duration,
    },
    Unsupported,
    Failed(String),
}

impl Acl {
    pub(super) fn new(bin: PathBuf, cfg: &PolicyBenchConfig) -> Self {
        let cpu = cfg.cpu.unwrap_or(0);
        let cpus = crate::report::Machine::detect(None).logical_cpus;
        Acl {
            bin,
            prlimit: find_in_path("prlimit"),
            cpu,
            reader_cpu: (0..cpus).find(|&c| c != cpu),
            keep_files: cfg.keep_files,
            workdir: cfg.workdir.clone(),
            file_prefix: format!("weiracl{}", std::process::id()),
            timeout: cfg.acl_timeout,
            unsupported: BTreeSet::new(),
            hugepage_notes: Vec::new(),
        }
    }

    /// Compiles `Pass` and `Log` out of `flat`, writes the rule and trace files and
    /// reserves hugepages; an error is a note. `verdicts` are weir's, one per probe.
    pub(super) fn prepare(
        &mut self,
        label: &str,
        flat: &FlatRules,
        probes: &[Probe],
        verdicts: &[Verdict],
    ) -> Result<AclCase, String> {
        let path = |what: &str| self.workdir.join(format!("acl-{label}-{what}"));
        let (rules_file, trace_file, log_file, result_file) = (
            path("rules.txt"),
            path("trace.txt"),
            path("log.txt"),
            path("answers.txt"),
        );
        let plain = |section: &[FlatRule]| {
            first_match_only(section, ACL_PLAIN_RULES_MAX).ok_or_else(|| {
                format!(
                    "compiling Pass out of the flattened rules makes more than \
                     {ACL_PLAIN_RULES_MAX} rules"
                )
            })
        };
        let (egress, ingress) = (plain(&flat.egress)?, plain(&flat.ingress)?);
        let expected = probes
            .iter()
            .zip(verdicts)
            .filter(|(p, _)| p.key.is_v4())
            .map(|(_, v)| *v)
            .collect();
        let mut case = AclCase {
            label: label.to_string(),
            rules_file,
            trace_file,
            log_file,
            result_file,
            expected,
            checked: false,
            plain: egress.len() + ingress.len(),
            rules: 0,
            traces: probes.len(),
            mem_mb: 0,
            no_huge: false,
            _hugepages: None,
            spent: Duration::ZERO,
            stopped: None,
            runs: 0,
            all_algs: true,
        };
        case.rules = write_acl_rules(&case.rules_file, &egress, &ingress)
            .map_err(|e| format!("writing {}: {e}", case.rules_file.display()))?;
        write_acl_trace(&case.trace_file, probes)
            .map_err(|e| format!("writing {}: {e}", case.trace_file.display()))?;
        // EAL's own needs, the rules (96 B each in the context), the traces (16 B each) and
        // room for the runtime tables: 5.7 MiB for the 1.1M rules of 100k, but rte_acl's
        // tables grow fast with overlapping ranges, so 256 B more per rule.
        case.mem_mb = 512 + (case.rules * (96 + 256) + case.traces * 16) / (1 << 20);
        match HugepageReservation::ensure(case.mem_mb, "the rte_acl anchor") {
            Ok((reservation, note)) => {
                self.hugepage_notes.extend(note);
                case._hugepages = reservation;
            }
            Err(why) => {
                self.hugepage_notes.push(format!(
                    "the rte_acl anchor ran with --no-huge (4 KiB pages): {why}"
                ));
                case.no_huge = true;
            }
        }
        Ok(case)
    }

    /// One round at one size. Round 0 runs every algorithm, best first, unless one run takes
    /// over [`ACL_ALL_ALGS_MAX`]; later rounds run every algorithm while that still fits
    /// [`ACL_BUDGET`], else the fastest so far; no round starts once the budget is spent.
    ///
    /// # Errors
    /// [`PolicyBenchError::WrongAnswer`] when the anchor's answers differ from weir's.
    pub(super) fn round(
        &mut self,
        case: &mut AclCase,
        figures: &mut AclFigures,
        round: usize,
        rounds: usize,
    ) -> Result<(), PolicyBenchError> {
        if case.stopped.is_some() {
            return Ok(());
        }
        if round > 0 && case.spent >= ACL_BUDGET {
            case.stopped = Some(format!(
                "ran {} times in {:.0} s, then stopped (budget {} s per size)",
                case.runs,
                case.spent.as_secs_f64(),
                ACL_BUDGET.as_secs()
            ));
            return Ok(());
        }
        if round > 0 && case.all_algs && case.runs > 0 {
            let per_run = case.spent / case.runs as u32;
            let per_round = per_run * figures.algs.len().max(1) as u32;
            if case.spent + per_round * (rounds - round) as u32 > ACL_BUDGET {
                case.all_algs = false;
            }
        }
        let algs: Vec<&'static str> = if case.all_algs {
            ACL_ALGS.iter().rev().copied().collect()
        } else {
            figures.best().map(|(a, _)| a).into_iter().collect()
        };
        for alg in algs {
            if self.unsupported.contains(alg) {
                continue;
            }
            crate::progress::step(&format!(
                "policy: rte_acl on {} rules, {alg}, round {}/{rounds}",
                case.rules,
                round + 1
            ));
            match self.run_once(case, alg)? {
                AclOutcome::Ran {
                    ns,
                    build_ms,
                    memory,
                    wall,
                } => {
                    case.runs += 1;
                    case.spent += wall;
                    figures.algs.entry(alg).or_default().push(ns);
                    figures.build_ms.extend(build_ms);
                    figures.memory_bytes = figures.memory_bytes.or(memory);
                    if round == 0 && wall > ACL_ALL_ALGS_MAX {
                        case.all_algs = false;
                        break;
                    }
                }
                AclOutcome::Unsupported => {
                    self.unsupported.insert(alg);
                }
                AclOutcome::Failed(why) => {
                    case.stopped = Some(why);
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Notes about a size's runs; removes its files.
    pub(super) fn close(&mut self, case: AclCase) -> Vec<String> {
        let mut notes = Vec::new();
        if let Some(why) = &case.stopped {
            notes.push(format!(
                "{} rules: rte_acl on {} rules: {}{why}",
                case.label,
                case.rules,
                if case.runs == 0 { "no figure: " } else { "" }
            ));
        }
        if !case.all_algs && case.runs > 0 {
            notes.push(format!(
                "{} rules: rte_acl took {:.1} s per run (EAL start, reading {} rules and {} \
                 probes, build, classification), so not every algorithm ran in every round",
                case.label,
                case.spent.as_secs_f64() / case.runs as f64,
                case.rules,
                case.traces
            ));
        }
        let _ = std::fs::remove_file(&case.log_file);
        let _ = std::fs::remove_file(&case.result_file);
        if self.keep_files {
            notes.push(format!(
                "{} rules: the rte_acl anchor's inputs kept: {} and {} (perf/anchors/acl.sh runs \
                 them)",
                case.label,
                case.rules_file.display(),
                case.trace_file.display()
            ));
        } else {
            let _ = std::fs::remove_file(&case.rules_file);
            let _ = std::fs::remove_file(&case.trace_file);
        }
        notes
    }

    /// One run of `alg` on `case`; the first that runs has its answers checked.
    fn run_once(&self, case: &mut AclCase, alg: &str) -> Result<AclOutcome, PolicyBenchError> {
        let mut cmd = match &self.prlimit {
            Some(prlimit) => {
                let mut c = Command::new(prlimit);
                c.arg(format!(
                    "--data={}",
                    acl_data_limit(case.mem_mb, case.no_huge)
                ));
                c.arg("--").arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        cmd.arg("-l")
            .arg(self.cpu.to_string())
            .args(["--no-pci", "--file-prefix", &self.file_prefix])
            .args(["--force-max-simd-bitwidth=512", "--log-level=lib.acl:debug"])
            .args(["-m".to_string(), case.mem_mb.to_string()])
            .arg(if case.no_huge {
                "--no-huge"
            } else {
                "--in-memory"
            })
            .arg("--")
            .arg(format!("--rulesf={}", case.rules_file.display()))
            .arg(format!("--tracef={}", case.trace_file.display()))
            .arg(format!("--rulenum={}", case.rules.max(1)))
            .arg(format!("--tracenum={}", case.traces))
            .arg(format!(
                "--iter={}",
                (4_000_000 / case.traces.max(1)).clamp(1, 100)
            ))
            .arg(format!("--alg={alg}"));
        if !case.checked {
            cmd.arg(format!("--resultf={}", case.result_file.display()));
        }
        let command = format!("{cmd:?}").replace('"', "");
        let log =
            File::create(&case.log_file).map_err(|e| io_error(&case.log_file, "creating", e))?;
        let started = Instant::now();
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| PolicyBenchError::Io {
                what: format!("starting {command}"),
                source: e,
            })?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        // The reader runs on another CPU than the anchor's, which it would only get when
        // the anchor yields.
        let elsewhere = self.reader_cpu;
        let reader = std::thread::spawn(move || {
            if let Some(id) = elsewhere {
                core_affinity::set_for_current(core_affinity::CoreId { id });
            }
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        let deadline = started + self.timeout;
        let mut lines = Vec::new();
        let mut timed_out = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    timed_out = true;
                    break;
                }
            }
        }
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if !timed_out && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    timed_out = true;
                    break None;
                }
            }
        };
        let _ = reader.join();
        let wall = started.elapsed();
        let runtime = Path::new("/var/run/dpdk").join(&self.file_prefix);
        if runtime.is_dir() {
            let _ = std::fs::remove_dir_all(runtime);
        }
        let stdout: String = lines.iter().map(|(_, l)| format!("{l}\n")).collect();
        let log = std::fs::read_to_string(&case.log_file).unwrap_or_default();
        let both = format!("{stdout}{log}");
        if timed_out {
            return Ok(AclOutcome::Failed(format!(
                "did not finish within {} s (build too slow at this size?) and was killed{}",
                self.timeout.as_secs(),
                if lines.iter().any(|(_, l)| l.starts_with("rte_acl_build(")) {
                    " after its build"
                } else {
                    " during its build"
                }
            )));
        }
        if both.contains(&format!("failed to setup {alg} method")) {
            return Ok(AclOutcome::Unsupported);
        }
        let build_line = lines
            .iter()
            .position(|(_, l)| l.starts_with("rte_acl_build("));
        if let Some(i) = build_line {
            if !lines[i].1.ends_with("finished with 0") {
                return Ok(AclOutcome::Failed(format!(
                    "its build failed ({}); its log ends: {}",
                    lines[i].1,
                    tail(&log, 3).replace('\n', " | ")
                )));
            }
        }
        let status = status.expect("not timed out");
        let Some(pps) = parse_acl_rate(&stdout).filter(|_| status.success()) else {
            return Ok(AclOutcome::Failed(format!(
                "`{command}` failed ({status}); its output ends: {}",
                tail(&both, 4).replace('\n', " | ")
            )));
        };
        if !case.checked {
            check_answers(case)?;
            case.checked = true;
        }
        Ok(AclOutcome::Ran {
            ns: 1e9 / pps,
            build_ms: parse_acl_build_ms(&stdout),
            memory: parse_acl_memory(&log),
            wall,
        })
    }

    /// Notes about every size: algorithms skipped, hugepages, how build time was taken.
    pub(super) fn finish(self) -> Vec<String> {
        // One note for all sizes: the first, and how many sizes said the same kind of thing.
        let mut notes = Vec::new();
        if let Some(first) = self.hugepage_notes.first() {
            let more = self.hugepage_notes.len() - 1;
            notes.push(if more == 0 {
                first.clone()
            } else {
                format!("{first} (at the first size; likewise for {more} more, each on its own)")
            });
        }
        if !self.unsupported.is_empty() {
            notes.push(format!(
                "rte_acl algorithms this CPU or build cannot run, skipped: {}",
                self.unsupported.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        notes
    }
}

/// Compares the anchor's answers (`case.result_file`) with weir's verdicts, line by line.
fn check_answers(case: &AclCase) -> Result<(), PolicyBenchError> {
    let wrong = |what: String| {
        PolicyBenchError::WrongAnswer(format!("{} rules: rte_acl {what}", case.label))
    };
    let file =
        File::open(&case.result_file).map_err(|e| io_error(&case.result_file, "reading", e))?;
    let mut n = 0;
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| io_error(&case.result_file, "reading", e))?;
        let got =
            acl_verdict(&line).ok_or_else(|| wrong(format!("answer {i} unreadable: {line:?}")))?;
        let Some(&want) = case.expected.get(i) else {
            return Err(wrong(format!(
                "answered {} probes, {} asked",
                i + 1,
                case.expected.len()
            )));
        };
        if got != want {
            return Err(wrong(format!(
                "decided probe {i} {got:?} ({line}), weir {want:?}"
            )));
        }
        n += 1;
    }
    if n != case.expected.len() {
        return Err(wrong(format!(
            "answered {n} probes, {} asked",
            case.expected.len()
        )));
    }
    Ok(())
}

/// The heap the anchor may use (`prlimit --data`): what its build needs at most, so
/// that an infeasible build fails instead of pushing the machine into the OOM killer.
fn acl_data_limit(mem_mb: usize, no_huge: bool) -> u64 {
    let available_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .unwrap_or(4 << 20);
    let share = (available_kb as f64 * 1024.0 * ACL_DATA_LIMIT_FRACTION) as u64;
    // Without hugepages, EAL's own memory is ordinary heap too.
    share + if no_huge { (mem_mb as u64) << 20 } else { 0 }
}

#[cfg(test)]
mod tests {
    use weir_dataplane::flow::FlowKey;

    use super::*;
    use crate::policy::linear::{FlatAction, FlatRule, ANY, ANY_PORT};
    use crate::rng::SplitMix64;

    #[test]
    fn interval_prefixes_cover_exactly_against_a_naive_check() {
        let mut rng = SplitMix64(7);
        let mut cases = vec![
            (0, u32::MAX),
            (0, 0),
            (u32::MAX, u32::MAX),
            (1, u32::MAX - 1),
        ];
        for _ in 0..300 {
            let base = match rng.below(3) {
                0 => 0,
                1 => u32::MAX - 5000,
                _ => rng.next_u64() as u32 & !0xfff,
            };
            let lo = base + rng.below(2000) as u32;
            let hi = lo + rng.below(3000) as u32;
            cases.push((lo, hi));
        }
        for (lo, hi) in cases {
            let prefixes = interval_prefixes(lo, hi);
            assert!(
                prefixes.len() <= 62,
                "{lo}-{hi}: {} prefixes",
                prefixes.len()
            );
            let mut next = u64::from(lo);
            for &(addr, len) in &prefixes {
                let size = 1u64 << (32 - u32::from(len));
                assert_eq!(u64::from(addr) % size, 0, "{addr}/{len} is not aligned");
                assert_eq!(
                    u64::from(addr),
                    next,
                    "{lo}-{hi}: gap or overlap at {addr}/{len}"
                );
                next += size;
            }
            assert_eq!(next, u64::from(hi) + 1, "{lo}-{hi} not covered to its end");
            if hi - lo < 5000 {
                // The naive check: every address near the interval, one by one.
                let covered = |a: u32| {
                    prefixes.iter().any(|&(p, l)| {
                        let host = u32::MAX.checked_shr(u32::from(l)).unwrap_or(0);
                        a & !host == p
                    })
                };
                for a in lo.saturating_sub(20)..=hi.saturating_add(20) {
                    assert_eq!(covered(a), lo <= a && a <= hi, "{a} in {lo}-{hi}");
                }
            }
        }
        assert_eq!(interval_prefixes(0, u32::MAX), vec![(0, 0)]);
        assert_eq!(
            interval_prefixes(0xc612_0001, 0xc612_0006),
            vec![
                (0xc612_0001, 32),
                (0xc612_0002, 31),
                (0xc612_0004, 31),
                (0xc612_0006, 32)
            ]
        );
    }

    #[test]
    fn acl_files_and_output() {
        let dir = std::env::temp_dir().join(format!("weir-policy-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let flat = FlatRules {
            egress: vec![FlatRule {
                src: (0xc612_0001, 0xc612_0002),
                dst: ANY,
                sport: ANY_PORT,
                dport: (8080, 8089),
                proto: 6,
                action: FlatAction::Allow,
            }],
            ingress: vec![FlatRule {
                src: ANY,
                dst: (0xc612_0000, 0xc612_00ff),
                sport: ANY_PORT,
                dport: ANY_PORT,
                proto: 0,
                action: FlatAction::Deny,
            }],
            inexact: 0,
        };
        let rules = dir.join("rules.txt");
        assert_eq!(
            write_acl_rules(&rules, &flat.egress, &flat.ingress).unwrap(),
            3
        );
        assert_eq!(
            std::fs::read_to_string(&rules).unwrap(),
            "1 536870911 1 3323068417 32 0 0 0 65535 8080 8089 6 255\n\
             1 536870911 1 3323068418 32 0 0 0 65535 8080 8089 6 255\n\
             2 536870911 2 0 0 3323068416 24 0 65535 0 65535 0 0\n"
        );
        let trace = dir.join("trace.txt");
        let key = FlowKey {
            src: FlowKey::map_v4([198, 18, 0, 1]),
            dst: FlowKey::map_v4([198, 18, 0, 2]),
            src_port: 40000,
            dst_port: 80,
            proto: 6,
        };
        write_acl_trace(
            &trace,
            &[Probe {
                key,
                src: None,
                dst: None,
            }],
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(&trace).unwrap(),
            "3323068417 3323068418 40000 80 6\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();

        assert_eq!(parse_acl_rate(CAPTURED_STDOUT), Some(15_384_615.0));
        assert_eq!(parse_acl_build_ms(CAPTURED_STDOUT), Some(0.437));
        assert_eq!(
            parse_acl_build_ms("rte_acl_build(3) finished with 0\n"),
            None
        );
        assert_eq!(acl_verdict("0 0"), Some(Verdict::Allow));
        assert_eq!(acl_verdict("1 0"), Some(Verdict::Allow));
        assert_eq!(acl_verdict("1 2"), Some(Verdict::Deny));
        assert_eq!(acl_verdict("2 1"), Some(Verdict::Deny));
        for bad in ["", "1", "3 0", "1 1 1", "x 0"] {
            assert_eq!(acl_verdict(bad), None, "{bad:?}");
        }
        assert_eq!(parse_acl_rate("rte_acl_build(3) finished with 0\n"), None);
        assert_eq!(parse_acl_memory(CAPTURED_LOG), Some(77_232));
        assert_eq!(parse_acl_memory("total: 5 bytes\n"), None);
    }

    /// The anchor's stdout on a three-rule file, as captured.
    const CAPTURED_STDOUT: &str = "\
rte_acl_build(3) finished with 0
build_ms 0.437
search_ip5tuples: 3 lookups of 2 categories in 195 ns (6), 15384615 pkt/sec
";

    /// Its stderr with `--log-level=lib.acl:debug`, on the 1k-rule generated cluster.
    const CAPTURED_LOG: &str = "\
TELEMETRY: No legacy callbacks, legacy socket not created
ACL: Gen phase for ACL \"TESTACL\":
runtime memory footprint on socket -1:
single nodes/bytes used: 628/5024
quad nodes/vectors/bytes used: 358/1134/9072
DFA nodes/group64/bytes used: 17/68/36872
match nodes/bytes used: 172/22016
total: 77232 bytes
max limit: 18446744073709551615 bytes
ACL: Build phase for ACL \"TESTACL\":
node limit for tree split: 2048
nodes created: 1175
memory consumed: 8388615
ACL: trie 0: number of rules: 8806, indexes: 4
";
}
