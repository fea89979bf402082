//! The agent's configuration file: what it names, its defaults, and the checks made when
//! it is read (so that a mistake stops the agent at start, with the key that is wrong).

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The agent's configuration file (YAML).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentConfig {
    /// This node's name; left out (or empty), the `NODE_NAME` environment variable's
    /// value (a DaemonSet sets it from `spec.nodeName`).
    #[serde(default)]
    pub node: String,
    /// The uplink interface, if the node has one weir should take traffic from.
    #[serde(default)]
    pub uplink: Option<String>,
    /// Pod CIDRs of the cluster: the uplink's XDP program takes traffic to them.
    #[serde(default)]
    pub pod_cidrs: Vec<ipnet::IpNet>,
    /// The cluster's service CIDRs (kube-apiserver's `--service-cluster-ip-range`): the
    /// node's own stack routes them into the host link, so hostNetwork pods and the
    /// kubelet reach cluster IPs through weir. Empty (the default): only pods do.
    #[serde(default)]
    pub service_cidrs: Vec<ipnet::IpNet>,
    /// UDP ports the uplink program takes (WireGuard, VXLAN).
    #[serde(default = "default_udp_ports")]
    pub uplink_udp_ports: Vec<u16>,
    /// The cores workers run on, one pinned worker per core. Pod interfaces are spread
    /// over the workers in turn; the uplink goes to the first.
    pub cores: Vec<usize>,
    /// The file datastore: a directory of YAML files. Exactly one of `datastore` and
    /// `kubernetes` is set.
    #[serde(default)]
    pub datastore: Option<PathBuf>,
    /// Read cluster state from the Kubernetes API.
    #[serde(default)]
    pub kubernetes: Option<KubernetesConfig>,
    /// How long the control loop waits after a change for more before it recalculates
    /// (microseconds): a burst of changes becomes one new snapshot.
    #[serde(default = "default_coalesce")]
    pub coalesce_micros: u64,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Number of UMEM frames.
    #[serde(default = "default_frames")]
    pub frames: u32,
    /// WireGuard between nodes (needs `uplink`).
    #[serde(default)]
    pub wireguard: Option<crate::wireguard::WireGuardConfig>,
    /// Serve `weir-cni` (pods attached and detached at run time, addresses from IPAM).
    #[serde(default)]
    pub cni: Option<crate::attach::CniConfig>,
    /// The link between the node's own stack and the pods (`weir0`).
    #[serde(default)]
    pub host: HostConfig,
    /// The ports (and ICMP echo identifiers) source NAT gives pods' connections to the
    /// world, `[first, last]`: outside the kernel's ephemeral range
    /// (`net.ipv4.ip_local_port_range`, 32768–60999 by default), whose replies the uplink
    /// leaves to the kernel. Default `[61000, 65535]`.
    #[serde(default = "default_snat_ports")]
    pub snat_ports: [u16; 2],
    /// The node ports services may use, `"FIRST-LAST"` as kube-apiserver's
    /// `--service-node-port-range` (default `"30000-32767"`, kube-apiserver's default; it
    /// also takes `"FIRST+COUNT"`). The uplink's XDP program hands TCP and UDP to the
    /// node's uplink address on these ports to weir; keep it the API server's range.
    #[serde(
        default = "default_node_port_range",
        deserialize_with = "deserialize_port_range"
    )]
    pub node_port_range: [u16; 2],
}

/// The link to the node's own stack: kubelet's probes reach pods through it, pods reach
/// the node's addresses through it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostConfig {
    /// Create and use the link (default true). Off, pods cannot reach the node and the
    /// node cannot reach pods.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The kernel's end; weir's end is the same name with `-xdp` (default `weir0`).
    #[serde(default = "default_host_interface")]
    pub interface: String,
    /// Connections the node opens to its pods (kubelet's probes) pass whatever the pods'
    /// ingress policy says, as in Calico (default true). Off, they meet the pods'
    /// ingress policy like any other source.
    #[serde(default = "yes")]
    pub allow_host_to_pods: bool,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            enabled: true,
            interface: default_host_interface(),
            allow_host_to_pods: true,
        }
    }
}

/// Where the Kubernetes datastore finds its API server.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubernetesConfig {
    /// A kubeconfig file. Left out: the pod's service account (in a cluster), or
    /// `$KUBECONFIG` / `~/.kube/config`.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
}

/// Why the agent could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("config {path}: {why}")]
    Config { path: String, why: String },
    #[error("datastore {path}: {why}")]
    Datastore { path: String, why: String },
    #[error("pod {pod}: {why}")]
    Pod { pod: String, why: String },
    #[error("interface {name:?}: {why}")]
    Interface { name: String, why: String },
    #[error("snapshot: {0}")]
    Snapshot(String),
    #[error("worker: {0}")]
    Worker(String),
    #[error("metrics listener on {addr}: {why}")]
    Listen { addr: String, why: String },
}

impl AgentConfig {
    /// The datastore, for messages.
    pub fn datastore_name(&self) -> String {
        match &self.datastore {
            Some(dir) => dir.display().to_string(),
            None => "kubernetes".into(),
        }
    }

    /// The WireGuard section and its mode, if there is one.
    pub fn wireguard_mode(
        &self,
    ) -> Result<
        Option<(
            &crate::wireguard::WireGuardConfig,
            weir_crypto::EncryptionMode,
        )>,
        AgentError,
    > {
        match &self.wireguard {
            Some(w) => w
                .mode()
                .map(|m| Some((w, m)))
                .map_err(|why| AgentError::Config {
                    path: "wireguard.mode".into(),
                    why,
                }),
            None => Ok(None),
        }
    }

    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<AgentConfig, AgentError> {
        let err = |why: String| AgentError::Config {
            path: path.display().to_string(),
            why,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let de = serde_yaml::Deserializer::from_str(&text);
        let mut config: AgentConfig =
            serde_path_to_error::deserialize(de).map_err(|e| err(e.to_string()))?;
        config.node = node_name(&config.node, std::env::var("NODE_NAME").ok()).map_err(err)?;
        if config.cores.is_empty() {
            return Err(err("cores: name at least one core".into()));
        }
        match (&config.datastore, &config.kubernetes) {
            (Some(_), None) | (None, Some(_)) => {}
            (None, None) => {
                return Err(err(
                    "name a datastore: `datastore: <directory of YAML>` or `kubernetes: {}`".into(),
                ))
            }
            (Some(_), Some(_)) => {
                return Err(err(
                    "`datastore` and `kubernetes` are both set: choose one".into()
                ))
            }
        }
        // The machine's CPUs, not this process's affinity mask (which a parent may have
        // narrowed): workers pin themselves.
        let cpus = std::fs::read_to_string("/proc/cpuinfo")
            .map(|t| t.lines().filter(|l| l.starts_with("processor")).count())
            .unwrap_or(0)
            .max(std::thread::available_parallelism().map_or(1, |n| n.get()));
        let mut seen = std::collections::BTreeSet::new();
        for &core in &config.cores {
            if !seen.insert(core) {
                return Err(err(format!("cores: core {core} is named twice")));
            }
            if core >= cpus {
                return Err(err(format!(
                    "cores: core {core} does not exist here (CPUs 0..{})",
                    cpus - 1
                )));
            }
        }
        if config.frames < 512 || !config.frames.is_power_of_two() {
            return Err(err(format!(
                "frames: {} is not a power of two of at least 512",
                config.frames
            )));
        }
        let [first, last] = config.snat_ports;
        if first > last || first < 1024 {
            return Err(err(format!(
                "snatPorts: [{first}, {last}] is not a range of unprivileged ports \
                 (first <= last, first >= 1024)"
            )));
        }
        let [np_first, np_last] = config.node_port_range;
        if np_first <= last && first <= np_last {
            return Err(err(format!(
                "nodePortRange: {np_first}-{np_last} overlaps snatPorts [{first}, {last}]: a \
                 reply to a translated flow and a connection to a node port could not be told \
                 apart; move one of them"
            )));
        }
        if config.host.enabled && config.host.interface.len() + 4 > 15 {
            return Err(err(format!(
                "host.interface: {:?} is too long (weir's end adds \"-xdp\"; at most 11 bytes)",
                config.host.interface
            )));
        }
        if let Some(wg) = &config.wireguard {
            let mode = wg.mode().map_err(|e| err(format!("wireguard.mode: {e}")))?;
            if mode != weir_crypto::EncryptionMode::Off {
                if config.uplink.is_none() {
                    return Err(err(
                        "wireguard: needs an uplink (the interface to the other nodes)".into(),
                    ));
                }
                // The uplink's XDP program must hand WireGuard's port to weir.
                if !config.uplink_udp_ports.contains(&wg.port) {
                    config.uplink_udp_ports.push(wg.port);
                }
            }
        }
        Ok(config)
    }
}

/// The node's name: the configuration's, else `NODE_NAME`'s.
fn node_name(configured: &str, env: Option<String>) -> Result<String, String> {
    let name = if configured.trim().is_empty() {
        env.unwrap_or_default()
    } else {
        configured.to_owned()
    };
    let name = name.trim().to_owned();
    if name.is_empty() {
        return Err("node: name this node, or set NODE_NAME".into());
    }
    crate::policy::selector::validate_dns_subdomain(&name)
        .map_err(|why| format!("node: {name:?}: {why}"))?;
    Ok(name)
}

/// A port range as kube-apiserver's `--service-node-port-range` takes it: `FIRST-LAST`,
/// `FIRST+COUNT` (the COUNT ports after FIRST too) or a single port, with
/// `0 < FIRST <= LAST`.
pub fn parse_port_range(text: &str) -> Result<[u16; 2], String> {
    let bad = |why: &str| {
        format!(
            "{text:?} is not a port range: {why} (write FIRST-LAST, e.g. \"30000-32767\", as \
             kube-apiserver's --service-node-port-range)"
        )
    };
    let number = |t: &str| {
        t.trim()
            .parse::<u16>()
            .map_err(|_| bad(&format!("{t:?} is not a port")))
    };
    let (first, last) = if let Some((a, b)) = text.split_once('-') {
        (number(a)?, number(b)?)
    } else if let Some((a, n)) = text.split_once('+') {
        let first = number(a)?;
        let count = number(n)?;
        let last = first
            .checked_add(count)
            .ok_or_else(|| bad("it ends past port 65535"))?;
        (first, last)
    } else {
        let port = number(text)?;
        (port, port)
    };
    if first == 0 {
        return Err(bad("port 0 is not a port"));
    }
    if first > last {
        return Err(bad("the first port is after the last"));
    }
    Ok([first, last])
}

fn deserialize_port_range<'de, D: serde::Deserializer<'de>>(d: D) -> Result<[u16; 2], D::Error> {
    let text = String::deserialize(d)?;
    parse_port_range(&text).map_err(serde::de::Error::custom)
}

fn default_node_port_range() -> [u16; 2] {
    [30000, 32767]
}

fn yes() -> bool {
    true
}

fn default_host_interface() -> String {
    "weir0".into()
}

fn default_snat_ports() -> [u16; 2] {
    [
        weir_dataplane::snapshot::SNAT_PORTS.0,
        weir_dataplane::snapshot::SNAT_PORTS.1,
    ]
}

fn default_coalesce() -> u64 {
    1000
}

fn default_udp_ports() -> Vec<u16> {
    vec![51820, 4789]
}

fn default_listen() -> String {
    "127.0.0.1:9180".into()
}

fn default_frames() -> u32 {
    4096
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_name_comes_from_the_config_or_node_name() {
        assert_eq!(node_name("a", Some("b".into())).unwrap(), "a");
        assert_eq!(node_name("", Some("node-7".into())).unwrap(), "node-7");
        assert!(node_name("", None).unwrap_err().contains("NODE_NAME"));
        assert!(node_name("Bad_Name", None).is_err());
    }

    #[test]
    fn node_port_ranges_read_as_kube_apiserver_reads_them() {
        assert_eq!(parse_port_range("30000-32767"), Ok([30000, 32767]));
        assert_eq!(parse_port_range("30000+767"), Ok([30000, 30767]));
        assert_eq!(parse_port_range("31000"), Ok([31000, 31000]));
        for (text, why) in [
            ("32767-30000", "the first port is after the last"),
            ("0-100", "port 0 is not a port"),
            ("30000-70000", "\"70000\" is not a port"),
            ("65000+1000", "it ends past port 65535"),
            ("nodeports", "\"nodeports\" is not a port"),
        ] {
            let e = parse_port_range(text).unwrap_err();
            assert!(e.contains(why) && e.contains("FIRST-LAST"), "{text}: {e}");
        }
    }

    #[test]
    fn cores_must_be_distinct_and_exist() {
        let dir = std::env::temp_dir().join(format!("weir-agent-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |cores: &str| {
            let path = dir.join("agent.yaml");
            std::fs::write(
                &path,
                format!("node: n\ncores: {cores}\ndatastore: /nonexistent\n"),
            )
            .unwrap();
            AgentConfig::load(&path)
        };
        assert!(write("[0]").is_ok());
        let twice = write("[0, 0]").unwrap_err().to_string();
        assert!(twice.contains("named twice"), "{twice}");
        let missing = write("[4096]").unwrap_err().to_string();
        assert!(missing.contains("does not exist"), "{missing}");
        let none = write("[]").unwrap_err().to_string();
        assert!(none.contains("at least one core"), "{none}");
        assert_eq!(write("[0]").unwrap().node_port_range, [30000, 32767]);
        assert!(write("[0]").unwrap().service_cidrs.is_empty());
        let cidrs = write("[0]\nserviceCidrs: [198.19.0.0/16, '2001:db8:ffff::/112']").unwrap();
        assert_eq!(cidrs.service_cidrs.len(), 2);
        let range = write("[0]\nnodePortRange: 31000+99").unwrap();
        assert_eq!(range.node_port_range, [31000, 31099]);
        let bad = write("[0]\nnodePortRange: 32767-30000")
            .unwrap_err()
            .to_string();
        assert!(
            bad.contains("nodePortRange") && bad.contains("the first port is after the last"),
            "{bad}"
        );
        let overlap = write("[0]\nnodePortRange: 60000-61000")
            .unwrap_err()
            .to_string();
        assert!(
            overlap.contains("nodePortRange: 60000-61000 overlaps snatPorts [61000, 65535]"),
            "{overlap}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
