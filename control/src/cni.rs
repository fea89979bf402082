//! The CNI plugin (`weir-cni`) and the agent's end of it.
//!
//! `weir-cni` is what a container runtime executes (CNI spec 1.0/1.1: ADD, DEL, CHECK,
//! VERSION, STATUS, GC). It answers VERSION itself and hands every other command, as one
//! JSON line, to the node's agent over a Unix socket; the agent does the work (addresses
//! from IPAM, the veth pair, the endpoint and its policy in one snapshot, the interface on
//! a worker) and answers with one JSON line. The plugin turns that into the CNI result or
//! the CNI error object (`{"cniVersion", "code", "msg", "details"}`, on stdout, exit 1).
//!
//! Everything that needs privileges and state is in the agent, so the plugin holds no
//! state, and a plugin killed mid-ADD leaves nothing the agent does not know about (its
//! lease is found by container id on DEL or GC).

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// CNI versions `weir-cni` speaks.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// Where the agent listens by default.
pub const DEFAULT_SOCKET: &str = "/run/weir/cni.sock";

/// How long the plugin waits for the agent by default (ADD returns only once the pod's
/// policy is programmed).
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;

/// The gateway pods route through (answered by weir).
pub const GATEWAY_V4: &str = "169.254.1.1";
/// The IPv6 gateway pods route through (answered by weir).
pub const GATEWAY_V6: &str = "fe80::1";

/// CNI error codes used (spec: "Error codes").
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Invalid necessary environment variables.
    pub const INVALID_ENVIRONMENT: u32 = 4;
    /// I/O failure.
    pub const IO_FAILURE: u32 = 5;
    /// Failed to decode content.
    pub const DECODE_FAILURE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// The plugin is not available (STATUS).
    pub const NOT_AVAILABLE: u32 = 50;
    /// weir's own: the operation failed in the agent (see the message).
    pub const AGENT_FAILURE: u32 = 100;
}

/// The network configuration the runtime passes on stdin (one plugin of a conflist).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    /// The CNI version the result must be in.
    pub cni_version: String,
    /// The network's name.
    #[serde(default)]
    pub name: String,
    /// The agent's socket (default [`DEFAULT_SOCKET`]).
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// How long to wait for the agent, in seconds (default [`DEFAULT_TIMEOUT_SECS`]).
    #[serde(default)]
    pub timeout_seconds: Option<u64>,
    /// GC's list of attachments to keep (CNI 1.1).
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<ValidAttachment>>,
}

/// One attachment GC must keep.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidAttachment {
    /// The container id.
    #[serde(rename = "containerID")]
    pub container_id: String,
    /// The interface name.
    pub ifname: String,
}

/// A CNI command the agent serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Command {
    /// Attach.
    Add,
    /// Detach (idempotent).
    Del,
    /// Verify an attachment.
    Check,
    /// Whether ADDs can succeed now.
    Status,
    /// Release what is not in the valid list.
    Gc,
}

/// One request from the plugin to the agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    /// The command.
    pub command: Command,
    /// `CNI_CONTAINERID` (empty for STATUS and GC).
    #[serde(default)]
    pub container_id: String,
    /// `CNI_NETNS` (may be empty for DEL).
    #[serde(default)]
    pub netns: String,
    /// `CNI_IFNAME`.
    #[serde(default)]
    pub ifname: String,
    /// `K8S_POD_NAMESPACE` from `CNI_ARGS`.
    #[serde(default)]
    pub pod_namespace: Option<String>,
    /// `K8S_POD_NAME` from `CNI_ARGS`.
    #[serde(default)]
    pub pod_name: Option<String>,
    /// GC: attachments to keep.
    #[serde(default)]
    pub valid: Vec<ValidAttachment>,
}

/// What ADD made, for the CNI result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attached {
    /// The host-side interface.
    pub host_interface: String,
    /// Its MAC.
    pub host_mac: String,
    /// The pod's MAC.
    pub pod_mac: String,
    /// The pod's addresses.
    pub ips: Vec<IpAddr>,
    /// The pod interface's MTU.
    pub mtu: u16,
}

/// The agent's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Response {
    /// Done; ADD and CHECK say what is attached.
    Ok(Option<Attached>),
    /// Failed, with a CNI error code.
    Error {
        /// The code.
        code: u32,
        /// A short message.
        msg: String,
        /// More detail.
        details: String,
    },
}

/// Splits `CNI_ARGS` (`K=V;K=V`).
pub fn parse_args(args: &str) -> Vec<(String, String)> {
    args.split(';')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// The CNI result of an ADD (or CHECK), in the configuration's version.
pub fn result_json(cni_version: &str, netns: &str, ifname: &str, a: &Attached) -> Value {
    let old = cni_version.starts_with("0.3") || cni_version.starts_with("0.4");
    let ips: Vec<Value> = a
        .ips
        .iter()
        .map(|ip| {
            let (prefix, gateway, version) = match ip {
                IpAddr::V4(_) => (32, GATEWAY_V4, "4"),
                IpAddr::V6(_) => (128, GATEWAY_V6, "6"),
            };
            let mut entry = json!({
                "address": format!("{ip}/{prefix}"),
                "gateway": gateway,
                "interface": 1,
            });
            if old {
                entry["version"] = json!(version);
            }
            entry
        })
        .collect();
    let mut routes = Vec::new();
    if a.ips.iter().any(IpAddr::is_ipv4) {
        routes.push(json!({"dst": "0.0.0.0/0", "gw": GATEWAY_V4}));
    }
    if a.ips.iter().any(IpAddr::is_ipv6) {
        routes.push(json!({"dst": "::/0", "gw": GATEWAY_V6}));
    }
    json!({
        "cniVersion": cni_version,
        "interfaces": [
            {"name": a.host_interface, "mac": a.host_mac},
            {"name": ifname, "mac": a.pod_mac, "sandbox": netns, "mtu": a.mtu},
        ],
        "ips": ips,
        "routes": routes,
        "dns": {},
    })
}

/// The CNI error object.
pub fn error_json(cni_version: &str, code: u32, msg: &str, details: &str) -> Value {
    json!({"cniVersion": cni_version, "code": code, "msg": msg, "details": details})
}

/// Sends one request to the agent and waits (at most `timeout`) for its answer. A missing
/// or refusing socket is "try again later"; a timeout says the agent did not finish.
pub fn call(socket: &Path, request: &Request, timeout: Duration) -> Response {
    let fail = |code: u32, msg: &str, details: String| Response::Error {
        code,
        msg: msg.to_owned(),
        details,
    };
    let mut stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) => {
            return fail(
                code::TRY_AGAIN_LATER,
                "the weir agent is not reachable",
                format!(
                    "{}: {e}; is the weir agent running on this node?",
                    socket.display()
                ),
            )
        }
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let mut line = match serde_json::to_string(request) {
        Ok(l) => l,
        Err(e) => {
            return fail(
                code::DECODE_FAILURE,
                "cannot encode the request",
                e.to_string(),
            )
        }
    };
    line.push('\n');
    if let Err(e) = stream.write_all(line.as_bytes()) {
        return fail(
            code::IO_FAILURE,
            "cannot talk to the weir agent",
            e.to_string(),
        );
    }
    let mut answer = String::new();
    match BufReader::new(&stream).read_line(&mut answer) {
        Ok(0) => fail(
            code::IO_FAILURE,
            "the weir agent closed the connection",
            "no answer".into(),
        ),
        Ok(_) => serde_json::from_str(&answer).unwrap_or_else(|e| {
            fail(
                code::DECODE_FAILURE,
                "unreadable answer from the weir agent",
                e.to_string(),
            )
        }),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            fail(
                code::TRY_AGAIN_LATER,
                "the weir agent did not finish in time",
                format!(
                    "no answer within {} s; the pod is not started unprotected",
                    timeout.as_secs()
                ),
            )
        }
        Err(e) => fail(
            code::IO_FAILURE,
            "cannot talk to the weir agent",
            e.to_string(),
        ),
    }
}

/// The host-side interface name of an attachment: `w` and 14 hex digits of a hash of the
/// container id and interface (15 bytes, the kernel's limit).
pub fn host_interface(container_id: &str, ifname: &str) -> String {
    // FNV-1a, 64 bits: stable across runs and versions (unlike the std hasher).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in container_id.bytes().chain([0]).chain(ifname.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("w{:014x}", h & 0x00ff_ffff_ffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_and_interface_names() {
        let args = parse_args("IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-1");
        assert!(args.contains(&("K8S_POD_NAME".into(), "web-1".into())));
        let a = host_interface("abc", "eth0");
        assert_eq!(a.len(), 15);
        assert_eq!(a, host_interface("abc", "eth0"));
        assert_ne!(a, host_interface("abd", "eth0"));
        assert_ne!(a, host_interface("abc", "eth1"));
    }

    #[test]
    fn results_follow_the_requested_version() {
        let a = Attached {
            host_interface: "w1".into(),
            host_mac: "02:00:00:00:00:01".into(),
            pod_mac: "02:00:00:00:00:02".into(),
            ips: vec![
                "198.18.0.5".parse().unwrap(),
                "2001:db8::5".parse().unwrap(),
            ],
            mtu: 1440,
        };
        let new = result_json("1.0.0", "/run/netns/x", "eth0", &a);
        assert_eq!(new["ips"][0]["address"], "198.18.0.5/32");
        assert_eq!(new["ips"][1]["gateway"], "fe80::1");
        assert!(new["ips"][0].get("version").is_none());
        assert_eq!(new["interfaces"][1]["sandbox"], "/run/netns/x");
        let old = result_json("0.4.0", "/run/netns/x", "eth0", &a);
        assert_eq!(old["ips"][0]["version"], "4");
        assert_eq!(old["routes"][1]["dst"], "::/0");
    }

    #[test]
    fn an_absent_agent_is_try_again_later() {
        let r = call(
            Path::new("/nonexistent/weir.sock"),
            &Request {
                command: Command::Status,
                container_id: String::new(),
                netns: String::new(),
                ifname: String::new(),
                pod_namespace: None,
                pod_name: None,
                valid: Vec::new(),
            },
            Duration::from_secs(1),
        );
        assert!(
            matches!(
                r,
                Response::Error {
                    code: code::TRY_AGAIN_LATER,
                    ..
                }
            ),
            "{r:?}"
        );
    }
}
