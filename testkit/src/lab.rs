//! Network-namespace labs for the scenario tests and the benchmarks (root): commands run
//! with errors that say what failed, entering a namespace, reading an interface's MAC and
//! index, a pod's veth set up Calico-style, the root check, and guards that remove what a
//! lab made (namespaces, links, child processes, scratch directories) even when a test
//! fails or a benchmark returns early.
//!
//! Everything a lab makes carries the process id in its name, so that labs of different
//! processes never collide and a leftover of a killed run can be told apart. Nothing here
//! touches the machine's own interfaces or routes: every `ip` command a guard runs names a
//! namespace or a link it created.

use std::fmt;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

/// A MAC address.
pub type Mac = [u8; 6];

/// A command that could not be run or did not succeed; the message names the command line
/// and carries what it wrote to stderr. `Debug` shows the same message, so that
/// `.unwrap()` in a test prints it as is.
#[derive(Clone, PartialEq, Eq)]
pub struct LabError(String);

impl LabError {
    pub(crate) fn new(message: String) -> LabError {
        LabError(message)
    }
}

impl fmt::Display for LabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for LabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LabError {}

impl From<LabError> for String {
    fn from(error: LabError) -> String {
        error.0
    }
}

/// Runs `argv` (program, then arguments) and returns its output whatever its exit status;
/// an error only when it cannot be started.
pub fn output(argv: &[&str]) -> Result<Output, LabError> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| LabError::new("an empty command line".into()))?;
    Command::new(program)
        .args(args)
        .output()
        .map_err(|e| LabError::new(format!("`{}`: cannot run {program}: {e}", argv.join(" "))))
}

/// Runs `argv` (program, then arguments), which must succeed; returns its stdout. The
/// error names the command line, its exit status and its stderr (and its stdout, when
/// there is any).
pub fn run(argv: &[&str]) -> Result<String, LabError> {
    let out = output(argv)?;
    if !out.status.success() {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stdout = stdout.trim();
        return Err(LabError::new(format!(
            "`{}` failed ({}): {}{}{}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            if stdout.is_empty() { "" } else { "\nstdout: " },
            stdout,
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip ARGS`, which must succeed; its stdout.
pub fn ip(args: &[&str]) -> Result<String, LabError> {
    run(&[&["ip"], args].concat())
}

/// Runs `argv` inside network namespace `ns` (`ip netns exec`), which must succeed; its
/// stdout.
pub fn ns_exec(ns: &str, argv: &[&str]) -> Result<String, LabError> {
    run(&[&["ip", "netns", "exec", ns], argv].concat())
}

/// Moves the calling thread into network namespace `name` (one made by `ip netns add`).
/// Only this thread moves: sockets it opens, and processes it starts, live there.
pub fn setns(name: &str) -> Result<(), LabError> {
    let path = format!("/var/run/netns/{name}");
    let file = File::open(&path).map_err(|e| LabError::new(format!("open {path}: {e}")))?;
    // SAFETY: setns(2) takes a descriptor and a namespace type and touches no memory of
    // ours; `file` is open for the whole call. It changes only the calling thread's network
    // namespace, which is what this function promises its caller.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        let error = std::io::Error::last_os_error();
        return Err(LabError::new(format!("setns into {path}: {error}")));
    }
    Ok(())
}

/// Runs `f` on a new thread that has entered network namespace `ns`, and returns what it
/// returns (a socket bound there stays there, whichever thread uses it later). A panic in
/// `f` is resumed on the calling thread.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, LabError> {
    let ns = ns.to_owned();
    std::thread::spawn(move || setns(&ns).map(|()| f()))
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// `ip -n NS -o link show dev DEV`: one line about the interface.
fn link_line(ns: &str, dev: &str) -> Result<String, LabError> {
    ip(&["-n", ns, "-o", "link", "show", "dev", dev])
}

/// The MAC address of interface `dev` in namespace `ns`.
pub fn mac_of(ns: &str, dev: &str) -> Result<Mac, LabError> {
    let line = link_line(ns, dev)?;
    line.split_whitespace()
        .skip_while(|word| !word.starts_with("link/"))
        .nth(1)
        .and_then(parse_mac)
        .ok_or_else(|| LabError::new(format!("{ns}/{dev}: no MAC address in {line:?}")))
}

/// The interface index of `dev` in namespace `ns`.
pub fn ifindex(ns: &str, dev: &str) -> Result<u32, LabError> {
    let line = link_line(ns, dev)?;
    line.split(':')
        .next()
        .and_then(|index| index.trim().parse().ok())
        .ok_or_else(|| LabError::new(format!("{ns}/{dev}: no interface index in {line:?}")))
}

/// Parses "aa:bb:cc:dd:ee:ff" (either case).
pub fn parse_mac(text: &str) -> Option<Mac> {
    let mut mac = [0u8; 6];
    let mut parts = text.trim().split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// A MAC as "aa:bb:cc:dd:ee:ff", as the kernel shows it.
pub fn format_mac(mac: &Mac) -> String {
    mac.iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A veth from namespace `node` (end `host`) to `eth0` in the existing namespace `pod`,
/// configured Calico-style: `addr`/32 and a default route via 169.254.1.1, a link-scope
/// route to which the node side answers.
pub fn plumb_pod(node: &str, pod: &str, host: &str, addr: &str) -> Result<(), LabError> {
    ip(&[
        "-n", node, "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", pod,
    ])?;
    ip(&["-n", node, "link", "set", host, "up"])?;
    ip(&["-n", pod, "link", "set", "eth0", "up"])?;
    let addr = format!("{addr}/32");
    ip(&["-n", pod, "addr", "add", &addr, "dev", "eth0"])?;
    let gateway = [
        "route",
        "add",
        "169.254.1.1",
        "dev",
        "eth0",
        "scope",
        "link",
    ];
    ip(&[&["-n", pod][..], &gateway[..]].concat())?;
    let default = [
        "route",
        "add",
        "default",
        "via",
        "169.254.1.1",
        "dev",
        "eth0",
    ];
    ip(&[&["-n", pod][..], &default[..]].concat())?;
    Ok(())
}

/// Whether this process runs with effective user id 0.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Fails the test unless it runs as root, saying why: `what` names the test and what it
/// needs root for. The scenario tests do not skip themselves: CI runs them as root, and a
/// run without root must not pass them silently.
pub fn require_root(what: &str) {
    assert!(
        is_root(),
        "{what} needs root; CI runs the tests as root (run them with sudo, or as root)"
    );
}

/// Sends `signal` (a name, such as "TERM") to `child`, gives it `grace` to exit, then
/// kills it (SIGKILL) and reaps it. Signals go to the child's pid only.
pub fn stop(child: &mut Child, signal: &str, grace: Duration) {
    if matches!(child.try_wait(), Ok(None)) && signal != "KILL" {
        let _ = output(&["kill", &format!("-{signal}"), &child.id().to_string()]);
        let deadline = Instant::now() + grace;
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A child process stopped when the guard drops: at once (SIGKILL), or with
/// [`ChildGuard::with_grace`] SIGTERM first and SIGKILL once the grace has passed.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    grace: Option<Duration>,
}

impl ChildGuard {
    /// Kills `child` (SIGKILL) on drop.
    pub fn new(child: Child) -> ChildGuard {
        ChildGuard { child, grace: None }
    }

    /// Sends `child` SIGTERM on drop, and SIGKILL if it has not exited within `grace`.
    pub fn with_grace(child: Child, grace: Duration) -> ChildGuard {
        ChildGuard {
            child,
            grace: Some(grace),
        }
    }

    /// The child's pid.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The child itself (to wait for it, or see whether it has exited).
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        match self.grace {
            Some(grace) => stop(&mut self.child, "TERM", grace),
            None => stop(&mut self.child, "KILL", Duration::ZERO),
        }
    }
}

/// What a lab made, removed when the guard drops (also when a test fails or a benchmark
/// returns an error): first the child processes (by pid, newest first), then the links
/// (`ip link del`), then the network namespaces (`ip netns del`, newest first, which also
/// removes every interface still in them and any XDP program on those), then the scratch
/// directories. Namespace names must carry the process id.
#[derive(Debug, Default)]
pub struct NetnsGuard {
    children: Vec<ChildGuard>,
    /// (namespace, or `None` for the caller's; interface).
    links: Vec<(Option<String>, String)>,
    namespaces: Vec<String>,
    dirs: Vec<PathBuf>,
}

impl NetnsGuard {
    /// A guard that has made nothing yet.
    pub fn new() -> NetnsGuard {
        NetnsGuard::default()
    }

    /// Creates network namespace `name`, which must contain this process's id, and
    /// removes it on drop. A namespace of that name left behind by an earlier process
    /// with the same pid (one killed before its guards ran) is deleted first.
    pub fn add_netns(&mut self, name: &str) -> Result<(), LabError> {
        let pid = std::process::id().to_string();
        if !name.contains(&pid) {
            return Err(LabError::new(format!(
                "namespace {name:?} does not carry the process id {pid}"
            )));
        }
        let _ = output(&["ip", "netns", "del", name]);
        ip(&["netns", "add", name])?;
        self.namespaces.push(name.to_owned());
        Ok(())
    }

    /// Creates a veth pair in namespace `ns`: `name` there, `peer` in `peer_ns` (or in
    /// `ns` too, when `None`). Deleted on drop (both ends go together).
    pub fn veth(
        &mut self,
        ns: &str,
        name: &str,
        peer: &str,
        peer_ns: Option<&str>,
    ) -> Result<(), LabError> {
        let mut args = vec![
            "-n", ns, "link", "add", name, "type", "veth", "peer", "name", peer,
        ];
        if let Some(peer_ns) = peer_ns {
            args.extend(["netns", peer_ns]);
        }
        ip(&args)?;
        self.links.push((Some(ns.to_owned()), name.to_owned()));
        Ok(())
    }

    /// Starts `command` and stops it on drop (SIGKILL); returns its pid.
    pub fn spawn(&mut self, command: &mut Command) -> Result<u32, LabError> {
        let child = command.spawn().map_err(|e| {
            LabError::new(format!(
                "cannot start {:?}: {e}",
                command.get_program().to_string_lossy()
            ))
        })?;
        Ok(self.adopt(ChildGuard::new(child)))
    }

    /// Takes a child to stop on drop (as its guard says); returns its pid.
    pub fn adopt(&mut self, child: ChildGuard) -> u32 {
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// A fresh, empty scratch directory `{temp}/{prefix}-{pid}`, removed on drop.
    pub fn temp_dir(&mut self, prefix: &str) -> Result<PathBuf, LabError> {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| LabError::new(format!("creating {}: {e}", dir.display())))?;
        self.dirs.push(dir.clone());
        Ok(dir)
    }

    /// The namespaces made so far, oldest first.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        while let Some(child) = self.children.pop() {
            drop(child);
        }
        for (ns, link) in self.links.drain(..).rev() {
            let _ = match ns {
                Some(ns) => output(&["ip", "-n", &ns, "link", "del", "dev", &link]),
                None => output(&["ip", "link", "del", "dev", &link]),
            };
        }
        while let Some(ns) = self.namespaces.pop() {
            let _ = output(&["ip", "netns", "del", &ns]);
        }
        for dir in self.dirs.drain(..) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_and_format() {
        let mac = parse_mac("0a:1B:2c:3d:4e:5f").unwrap();
        assert_eq!(mac, [0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f]);
        assert_eq!(format_mac(&mac), "0a:1b:2c:3d:4e:5f");
        assert_eq!(parse_mac("0a:1b:2c:3d:4e"), None);
        assert_eq!(parse_mac("0a:1b:2c:3d:4e:5f:00"), None);
        assert_eq!(parse_mac("zz:1b:2c:3d:4e:5f"), None);
        assert_eq!(parse_mac("a:1b:2c:3d:4e:5f"), None);
    }

    #[test]
    fn a_failed_command_names_its_command_line_and_stderr() {
        let error = run(&["sh", "-c", "echo out; echo oops >&2; exit 3"]).unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains("`sh -c echo out; echo oops >&2; exit 3` failed"),
            "{text}"
        );
        assert!(
            text.contains("oops") && text.contains("stdout: out"),
            "{text}"
        );
        assert_eq!(format!("{error:?}"), text, "unwrap shows the message");
        let error = run(&["weir-testkit-no-such-program"]).unwrap_err();
        assert!(error.to_string().contains("cannot run"), "{error}");
        assert_eq!(run(&["sh", "-c", "echo hi"]).unwrap(), "hi\n");
        assert!(!output(&["false"]).unwrap().status.success());
    }

    #[test]
    fn namespaces_must_carry_the_pid() {
        let mut guard = NetnsGuard::new();
        let error = guard.add_netns("weir-no-pid").unwrap_err();
        assert!(error.to_string().contains("process id"), "{error}");
        assert!(guard.namespaces().is_empty());
    }

    #[test]
    fn root_a_guard_removes_its_namespace_and_veth() {
        require_root("root_a_guard_removes_its_namespace_and_veth (network namespaces)");
        let pid = std::process::id();
        let ns = format!("weir-tk-{pid}");
        let (a, b) = (format!("wtk{pid}a"), format!("wtk{pid}b"));
        let mut guard = NetnsGuard::new();
        guard.add_netns(&ns).unwrap();
        guard.veth(&ns, &a, &b, None).unwrap();
        ip(&["-n", &ns, "link", "set", &a, "address", "02:00:00:00:00:0a"]).unwrap();
        assert_eq!(mac_of(&ns, &a).unwrap(), [2, 0, 0, 0, 0, 0x0a]);
        let index = ifindex(&ns, &b).unwrap();
        let shown = in_netns(&ns, move || run(&["ip", "-o", "link", "show"]).unwrap()).unwrap();
        assert!(shown.contains(&format!("{index}: {b}@")), "{shown}");
        let error = ip(&["-n", &ns, "link", "show", "dev", "wtk-none"]).unwrap_err();
        assert!(error.to_string().contains("`ip -n"), "{error}");
        assert!(in_netns("weir-tk-none", || ()).is_err());
        drop(guard);
        let list = ip(&["netns", "list"]).unwrap();
        assert!(!list.contains(&ns), "{list}");
    }

    #[test]
    fn children_are_stopped_and_scratch_directories_removed_on_drop() {
        let mut guard = NetnsGuard::new();
        let dir = guard.temp_dir("weir-testkit-guard").unwrap();
        assert!(
            dir.is_dir()
                && dir
                    .to_string_lossy()
                    .contains(&std::process::id().to_string())
        );
        let pid = guard.spawn(Command::new("sleep").arg("30")).unwrap();
        let graceful = Command::new("sleep").arg("30").spawn().unwrap();
        let graceful = guard.adopt(ChildGuard::with_grace(graceful, Duration::from_secs(5)));
        let started = Instant::now();
        drop(guard);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "SIGTERM sufficed"
        );
        assert!(!dir.exists());
        for pid in [pid, graceful] {
            // Reaped, so no such process (or a new one, not ours: not a zombie of ours).
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            assert!(!state.contains("(sleep) Z"), "{pid}: {state}");
        }
    }
}
