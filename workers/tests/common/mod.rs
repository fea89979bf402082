//! Helpers shared by the worker scenario tests (root): `ip` commands, entering a network
//! namespace, a pod's veth set up Calico-style, and reading a MAC.

#![allow(dead_code)]

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::Command;

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this test needs root (network namespaces, AF_XDP); CI runs it as root"
    );
}

/// `ip ARGS`, which must succeed; its output.
pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Moves the calling thread into network namespace `name`.
pub fn enter_netns(name: &str) {
    let f = File::open(format!("/var/run/netns/{name}")).expect("open netns");
    // SAFETY: `f` is an open namespace file; setns changes only the calling thread, which
    // is dedicated to the worker.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
}

/// A veth from namespace `node` (end `host`) to `eth0` in the existing namespace `pod`,
/// configured Calico-style: `addr`/32 and a default route via 169.254.1.1.
pub fn plumb_pod(node: &str, pod: &str, host: &str, addr: &str) {
    ip(&[
        "-n", node, "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", pod,
    ]);
    ip(&["-n", node, "link", "set", host, "up"]);
    ip(&["-n", pod, "link", "set", "eth0", "up"]);
    ip(&[
        "-n",
        pod,
        "addr",
        "add",
        &format!("{addr}/32"),
        "dev",
        "eth0",
    ]);
    let gateway = [
        "route",
        "add",
        "169.254.1.1",
        "dev",
        "eth0",
        "scope",
        "link",
    ];
    ip(&[&["-n", pod][..], &gateway[..]].concat());
    let default = [
        "route",
        "add",
        "default",
        "via",
        "169.254.1.1",
        "dev",
        "eth0",
    ];
    ip(&[&["-n", pod][..], &default[..]].concat());
}

/// The MAC of `dev` in namespace `ns`.
pub fn mac_of(ns: &str, dev: &str) -> [u8; 6] {
    let text = ip(&["-n", ns, "-br", "link", "show", dev]);
    let hex = text
        .split_whitespace()
        .nth(2)
        .expect("a MAC in `ip -br link`");
    let mut mac = [0u8; 6];
    for (b, part) in mac.iter_mut().zip(hex.split(':')) {
        *b = u8::from_str_radix(part, 16).expect("MAC");
    }
    mac
}
