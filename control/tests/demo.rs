//! `weir demo` as a newcomer runs it (root; CI runs it): the two-node cluster comes up, the
//! matrix shows every expected verdict, the figures are printed, WireGuard sealed the
//! cross-node traffic, and nothing is left behind. A demo whose policy is missing fails;
//! Ctrl-C in the middle cleans up; `--keep` leaves it running until `--down`.
//!
//! The demos run one at a time (they pin the same cores and would measure each other).

use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use weir_testkit::lab::require_root;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn weir() -> Command {
    Command::new(env!("CARGO_BIN_EXE_weir"))
}

/// A short demo (1 s iperf3 runs, 50 round trips), with `args`, its output captured.
fn spawn_demo(args: &[&str]) -> Child {
    weir()
        .arg("demo")
        .args(["--seconds", "1", "--round-trips", "50"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// What a demo of process `pid` may leave: namespaces, its directory, its agents.
fn leftovers(pid: u32) -> Vec<String> {
    let mut left: Vec<String> = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .lines()
    .filter_map(|l| l.split_whitespace().next())
    .filter(|n| n.starts_with("wd-") && n.ends_with(&format!("-{pid}")))
    .map(str::to_owned)
    .collect();
    let dir = format!("/run/weir-demo-{pid}");
    if std::path::Path::new(&dir).exists() {
        left.push(dir.clone());
    }
    // Agents whose configuration lies in that directory.
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&dir) {
            left.push(format!(
                "process {}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    left
}

/// The pid of a finished demo, from the directory it named in its output.
fn pid_in(out: &str) -> Option<u32> {
    out.split("weir-demo-")
        .nth(1)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[test]
fn demo_shows_every_expected_verdict_and_the_figures_and_cleans_up() {
    require_root("weir demo");
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let child = spawn_demo(&[]);
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    // The matrix, then the same matrix across a kill -9 of node-a's agent.
    assert_eq!(
        all.matches("82 of 82 probes as expected").count(),
        2,
        "{all}"
    );
    // The NodePort from node-b's stack, before and after the restart.
    assert_eq!(all.matches("(shop/web)  TU").count(), 2, "{all}");
    assert_eq!(
        all.matches("ms after the new agent started").count(),
        2,
        "{all}"
    );
    // Both kinds of cell: reached both ways, and blocked both ways (the scanner's row).
    assert!(
        all.contains("ops/scanner (b)            --       --"),
        "{all}"
    );
    // The figures: two throughputs and two round-trip lines, with numbers.
    let rates: Vec<f64> = all
        .lines()
        .filter(|l| l.contains("Gbit/s"))
        .filter_map(|l| {
            let before = l.split(" Gbit/s").next()?;
            before.rsplit(' ').next()?.parse().ok()
        })
        .collect();
    assert_eq!(rates.len(), 2, "{all}");
    assert!(rates.iter().all(|r| *r > 0.0), "{rates:?}");
    assert_eq!(all.matches("UDP round trip p50").count(), 2, "{all}");
    assert!(all.contains("(50 sent, 0 lost)"), "{all}");
    // WireGuard carried the cross-node traffic on both nodes.
    for node in ["node-a", "node-b"] {
        let line = all
            .lines()
            .find(|l| {
                l.trim_start()
                    .starts_with(&format!("{node}: WireGuard sealed"))
            })
            .unwrap_or_else(|| panic!("no counters of {node}: {all}"));
        let sealed: u64 = line
            .split("sealed ")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .and_then(|s| s.parse().ok())
            .unwrap();
        assert!(sealed > 100, "{line}");
    }
    assert_eq!(leftovers(pid), Vec::<String>::new());
}

#[test]
fn a_missing_policy_makes_the_matrix_differ_and_the_demo_fail() {
    require_root("weir demo");
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let child = spawn_demo(&["--without-policy", "security.quarantine"]);
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    // Without the quarantine, the scanner reaches the open pods: web, monitor (TCP and
    // UDP each), and nothing else changes.
    assert!(all.contains("4 of 82 probes differ"), "{all}");
    assert!(
        all.contains("scanner -> web TCP: expected blocked, seen reached"),
        "{all}"
    );
    assert!(all.contains("FAILED"), "{all}");
    assert_eq!(leftovers(pid), Vec::<String>::new());
}

fn wait_for_output(child: &mut Child, deadline: Duration, marker: &str) -> String {
    use std::io::Read;
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            // Keep draining after the test stopped listening: the demo writes on.
            let _ = tx.send(buf[..n].to_vec());
        }
    });
    let end = Instant::now() + deadline;
    let mut seen = String::new();
    while !seen.contains(marker) {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => seen.push_str(&String::from_utf8_lossy(&chunk)),
            Err(_) => panic!("no {marker:?} within {deadline:?}: {seen}"),
        }
    }
    seen
}

#[test]
fn ctrl_c_in_the_middle_leaves_nothing_behind() {
    require_root("weir demo");
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut child = spawn_demo(&[]);
    let pid = child.id();
    // Interrupted once the agents run and pods are being attached.
    wait_for_output(&mut child, Duration::from_secs(60), "[4/9");
    assert!(!leftovers(pid).is_empty(), "the demo made nothing yet");
    let killed = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the demo did not stop in 30 s");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success());
    assert!(err.contains("interrupted"), "{err}");
    assert_eq!(leftovers(pid), Vec::<String>::new());
}

#[test]
fn keep_leaves_the_cluster_running_until_down() {
    require_root("weir demo");
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let out = spawn_demo(&["--keep"]).wait_with_output().unwrap();
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("weir demo --down"), "{all}");
    let pid = pid_in(&all).expect("the kept demo names its directory");
    let left = leftovers(pid);
    // Two nodes and six pods, the directory, two agents (and six echo servers).
    assert!(
        left.iter().filter(|l| l.starts_with("wd-")).count() == 8,
        "{left:?}"
    );
    // The kept agent answers `weir status` inside its node.
    let status = Command::new("ip")
        .args(["netns", "exec", &format!("wd-node-a-{pid}")])
        .arg(env!("CARGO_BIN_EXE_weir"))
        .arg("status")
        .output()
        .unwrap();
    let status_text = text(&status);
    assert!(status.status.success(), "{status_text}");
    assert!(status_text.contains("agent:      ready"), "{status_text}");
    let down = weir().args(["demo", "--down"]).output().unwrap();
    assert!(down.status.success(), "{}", text(&down));
    assert!(
        text(&down).contains(&format!("weir-demo-{pid}")),
        "{}",
        text(&down)
    );
    assert_eq!(leftovers(pid), Vec::<String>::new());
}
