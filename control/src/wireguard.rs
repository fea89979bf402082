//! The agent's WireGuard set-up: the node key file, the remote nodes of the datastore
//! turned into routes and peers, and the check that this node's published key is its own.
//!
//! # What is routed to a node
//!
//! The IPAM blocks it holds (`IPAMBlock` objects, or IPAM's block files with the file
//! datastore): weir-cni's addresses come from them, so one pool shared by many nodes
//! routes each node's block to that node, and a block claimed or released changes the
//! routes and the peer's allowed IPs with the next calculation, like any other object.
//!
//! `spec.podCIDRs` is the fallback for a node that holds no block at all: pods addressed
//! by something other than weir's IPAM (static pods of the file datastore, another IPAM
//! handing out the node's podCIDR) still route. Once a node holds a block its podCIDRs are
//! no longer read, and a podCIDR that overlaps any node's block is left out with a warning
//! (the block says where those addresses are; and WireGuard's allowed IPs must not
//! overlap between peers).

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;
use weir_crypto::{EncryptionMode, NodeKey, PeerConfig};
use weir_dataplane::snapshot::{Mac, NextHop, PeerSpec, Prefix, Tunnel};
use weir_dataplane::SnapshotBuilder;

use crate::agent::AgentError;
use crate::policy::load::Cluster;

/// Annotation carrying a node's WireGuard public key (base64).
pub const PUBLIC_KEY_ANNOTATION: &str = "weir.dev/wireguard-public-key";
/// Annotation giving a node's MAC on the underlay, when the kernel's neighbour table should
/// not be asked (static underlays, tests).
pub const UNDERLAY_MAC_ANNOTATION: &str = "weir.dev/underlay-mac";

/// The `wireguard:` section of the agent's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WireGuardConfig {
    /// `required` (the default: no cleartext to a node without a usable peer), `preferred`
    /// (cleartext to such nodes, counted and logged) or `off`.
    #[serde(default = "default_mode")]
    pub mode: String,
    /// The UDP port (51820).
    #[serde(default = "default_port")]
    pub port: u16,
    /// The node's private key; created (mode 0600) on first start.
    pub key_file: PathBuf,
    /// This node's address on the underlay (the uplink's). Left out, the first InternalIP
    /// of this node's Node object (what a DaemonSet's shared configuration wants).
    #[serde(default)]
    pub address: Option<IpAddr>,
}

fn default_mode() -> String {
    "required".into()
}

fn default_port() -> u16 {
    weir_crypto::DEFAULT_PORT
}

impl WireGuardConfig {
    /// The mode, checked.
    pub fn mode(&self) -> Result<EncryptionMode, String> {
        self.mode.parse()
    }
}

/// Reads the node key from `path`, or creates it there (32 random bytes from the OS,
/// base64, mode 0600) when the file does not exist. A key file that group or others may
/// read is refused. The key itself never appears in an error.
pub fn load_or_create_key(path: &Path) -> Result<(NodeKey, bool), AgentError> {
    let err = |why: String| AgentError::Config {
        path: path.display().to_string(),
        why,
    };
    match std::fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(err(format!(
                    "the WireGuard key file has mode {mode:o}: group and others must not read \
                     it (chmod 600)"
                )));
            }
            let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
            let key = NodeKey::from_base64(&text)
                .map_err(|e| err(format!("not a WireGuard private key: {e}")))?;
            Ok((key, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
            }
            let mut bytes = [0u8; 32];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| f.read_exact(&mut bytes))
                .map_err(|e| err(format!("no randomness for a new key: {e}")))?;
            let key = NodeKey::from_bytes(bytes);
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| err(e.to_string()))?;
            f.write_all(format!("{}\n", key.secret_base64()).as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| err(e.to_string()))?;
            Ok((key, true))
        }
        Err(e) => Err(err(e.to_string())),
    }
}

/// The MAC the kernel's neighbour table holds for an IPv4 address, from `/proc/net/arp`
/// (of the agent's network namespace).
fn kernel_neighbor(ip: IpAddr) -> Option<Mac> {
    let IpAddr::V4(v4) = ip else { return None };
    let table = std::fs::read_to_string("/proc/net/arp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // IP address, HW type, Flags (0x2: complete), HW address, Mask, Device.
        if cols.len() >= 4 && cols[0] == v4.to_string() && cols[2] != "0x0" {
            crate::agent::parse_mac(cols[3])
        } else {
            None
        }
    })
}

/// Adds the other nodes of `cluster` to `b` (their underlay address and MAC, a route for
/// each of their prefixes — see [`node_prefixes`] — and, when WireGuard is on, their peer
/// with those prefixes as allowed IPs) and returns the WireGuard peers as the protocol sees
/// them (for the agent to check the set before it publishes it).
/// A node that cannot be used (no InternalIP, a malformed key) is reported in `warnings`
/// and left out; the others are unaffected.
pub fn remote_nodes(
    me: &str,
    wg: Option<(&WireGuardConfig, EncryptionMode)>,
    cluster: &Cluster,
    b: &mut SnapshotBuilder,
    warnings: &mut Vec<String>,
) -> Vec<PeerConfig> {
    let mut peers = Vec::new();
    let held = blocks_by_node(cluster);
    for block in cluster.ipam_blocks.values() {
        if block.node != me && !cluster.nodes.contains_key(&block.node) {
            warnings.push(format!(
                "IPAMBlock {} ({}) is held by node {}, which has no Node object: its \
                 addresses are not routed",
                block.name, block.cidr, block.node
            ));
        }
    }
    for node in cluster.nodes.values().filter(|n| n.name != me) {
        let Some(&underlay) = node.internal_ips.first() else {
            warnings.push(format!(
                "node {}: no InternalIP in status.addresses; its pods are unreachable",
                node.name
            ));
            continue;
        };
        let mac = match node.annotations.get(UNDERLAY_MAC_ANNOTATION) {
            Some(text) => match crate::agent::parse_mac(text) {
                Some(m) => Some(m),
                None => {
                    warnings.push(format!(
                        "node {}: {UNDERLAY_MAC_ANNOTATION} {text:?} is not a MAC",
                        node.name
                    ));
                    None
                }
            },
            None => kernel_neighbor(underlay),
        };
        if mac.is_none() {
            warnings.push(format!(
                "node {}: no MAC known for {underlay} (neither {UNDERLAY_MAC_ANNOTATION} nor \
                 the kernel's neighbour table): traffic to its pods is dropped as \
                 neighbor_unresolved",
                node.name
            ));
        }
        let key = match node.annotations.get(PUBLIC_KEY_ANNOTATION) {
            Some(text) => match weir_crypto::parse_public(text) {
                Ok(k) => Some(k),
                Err(e) => {
                    warnings.push(format!(
                        "node {}: {PUBLIC_KEY_ANNOTATION}: {e}; no peer for it",
                        node.name
                    ));
                    None
                }
            },
            None => None,
        };
        let tunnel = match wg {
            None | Some((_, EncryptionMode::Off)) => Tunnel::None,
            Some((_, EncryptionMode::Required)) => Tunnel::WireGuard,
            Some((_, EncryptionMode::Preferred)) if key.is_some() => Tunnel::WireGuard,
            Some((_, EncryptionMode::Preferred)) => {
                warnings.push(format!(
                    "node {}: no WireGuard key; mode preferred sends its traffic in clear",
                    node.name
                ));
                Tunnel::None
            }
        };
        if key.is_none() && tunnel == Tunnel::WireGuard {
            warnings.push(format!(
                "node {}: no usable WireGuard key; mode required drops its traffic \
                 (wireguard_no_peer)",
                node.name
            ));
        }
        let id = b.node(&node.name, underlay, mac);
        // The node itself (its kubelet, a node port's client there) is reached directly on
        // the underlay, in clear: WireGuard carries pod traffic, as Calico's does without
        // host encryption. Replies to a node port's client on another node need it.
        b.route(
            Prefix::host(underlay),
            NextHop::Remote {
                node: id,
                tunnel: Tunnel::None,
            },
        );
        let mut nets = Vec::new();
        let mut prefixes = Vec::new();
        for net in prefixes_of(&node.name, cluster, &held, warnings) {
            match Prefix::new(net.network(), net.prefix_len()) {
                Ok(p) => {
                    b.route(p, NextHop::Remote { node: id, tunnel });
                    nets.push(net);
                    prefixes.push(p);
                }
                Err(e) => warnings.push(format!("node {}: pod prefix {net}: {e}", node.name)),
            }
        }
        if let (Some((config, mode)), Some(public_key)) = (wg, key) {
            if mode != EncryptionMode::Off {
                b.peer(PeerSpec {
                    node: id,
                    name: node.name.clone(),
                    public_key: *public_key.as_bytes(),
                    endpoint: SocketAddr::new(underlay, config.port),
                    allowed_ips: prefixes,
                    persistent_keepalive: None,
                });
                peers.push(PeerConfig {
                    name: node.name.clone(),
                    public_key,
                    endpoint: SocketAddr::new(underlay, config.port),
                    allowed_ips: nets,
                    persistent_keepalive: None,
                });
            }
        }
    }
    peers
}

/// The prefixes routed to node `name` (see the module doc): the IPAM blocks it holds, in
/// address order; when it holds none, its `spec.podCIDRs` less those that overlap any
/// node's block (each left out with a warning).
pub fn node_prefixes(name: &str, cluster: &Cluster, warnings: &mut Vec<String>) -> Vec<IpNet> {
    prefixes_of(name, cluster, &blocks_by_node(cluster), warnings)
}

/// The blocks each node holds, in address order.
fn blocks_by_node(cluster: &Cluster) -> BTreeMap<&str, Vec<IpNet>> {
    let mut held: BTreeMap<&str, Vec<IpNet>> = BTreeMap::new();
    for blk in cluster.ipam_blocks.values() {
        held.entry(blk.node.as_str()).or_default().push(blk.cidr);
    }
    for nets in held.values_mut() {
        nets.sort();
    }
    held
}

/// [`node_prefixes`] with the blocks already grouped by node. The fallback's overlap check
/// scans every block for each podCIDR of a node holding none (nodes × blocks comparisons
/// at worst, a few milliseconds for thousands of each, once per calculation).
fn prefixes_of(
    name: &str,
    cluster: &Cluster,
    held: &BTreeMap<&str, Vec<IpNet>>,
    warnings: &mut Vec<String>,
) -> Vec<IpNet> {
    if let Some(nets) = held.get(name).filter(|n| !n.is_empty()) {
        return nets.clone();
    }
    let Some(node) = cluster.nodes.get(name) else {
        return Vec::new();
    };
    node.pod_cidrs
        .iter()
        .filter(|net| {
            let clash = cluster
                .ipam_blocks
                .values()
                .find(|blk| blk.cidr.contains(&net.network()) || net.contains(&blk.cidr.network()));
            if let Some(blk) = clash {
                warnings.push(format!(
                    "node {name}: holds no IPAM block, and its podCIDR {net} overlaps \
                     IPAMBlock {} ({}) of node {}: not routed to node {name}",
                    blk.name, blk.cidr, blk.node
                ));
            }
            clash.is_none()
        })
        .copied()
        .collect()
}

/// A warning when this node's object does not publish `key` (the operator, or the
/// control plane, must put it in the annotation for the other nodes to reach this one).
pub fn check_published(me: &str, key: &NodeKey, cluster: &Cluster) -> Option<String> {
    let public = key.public_base64();
    let published = cluster
        .nodes
        .get(me)
        .and_then(|n| n.annotations.get(PUBLIC_KEY_ANNOTATION));
    match published {
        Some(p) if p.trim() == public => None,
        Some(p) => Some(format!(
            "node {me} publishes WireGuard key {p} but this agent's key is {public}: other \
             nodes cannot reach this one until {PUBLIC_KEY_ANNOTATION} is updated"
        )),
        None => Some(format!(
            "node {me} has no {PUBLIC_KEY_ANNOTATION} annotation: publish {public} for the \
             other nodes to reach this one"
        )),
    }
}

/// This node's underlay address: `address` when configured, else the first InternalIP of
/// its Node object, else an error saying what to set.
pub fn local_address(w: &WireGuardConfig, me: &str, cluster: &Cluster) -> Result<IpAddr, String> {
    if let Some(a) = w.address {
        return Ok(a);
    }
    let node = cluster
        .nodes
        .values()
        .find(|n| n.name == me)
        .ok_or_else(|| {
            format!(
                "wireguard.address is not set and node {me} has no Node object to take its \
                 InternalIP from: set wireguard.address"
            )
        })?;
    node.internal_ips.first().copied().ok_or_else(|| {
        format!(
            "wireguard.address is not set and Node {me} has no InternalIP in \
             status.addresses: set wireguard.address"
        )
    })
}

/// Publishes this node's public key in its Node object of the file datastore, when that
/// object is the only document of its file: the file is rewritten with the annotation set
/// (a temporary file, fsync, rename). Returns what was done, `Ok(None)` when the key was
/// already published, or a warning when the agent cannot do it safely (no Node object, or
/// one that shares its file with other objects, whose formatting the agent will not
/// touch).
pub fn publish_key(me: &str, key: &NodeKey, cluster: &Cluster) -> Result<Option<String>, String> {
    if check_published(me, key, cluster).is_none() {
        return Ok(None);
    }
    let public = key.public_base64();
    let object = crate::policy::model::ObjectRef::cluster(crate::policy::model::Kind::Node, me);
    let Some(origin) = cluster.origins.get(&object) else {
        return Err(format!(
            "node {me} has no Node object in the datastore: add one with annotation \
             {PUBLIC_KEY_ANNOTATION}: \"{public}\" for the other nodes to reach this one"
        ));
    };
    let path = PathBuf::from(&origin.source);
    let manual = |why: &str| {
        format!(
            "{}: {why}; set {PUBLIC_KEY_ANNOTATION}: \"{public}\" on node {me} by hand",
            path.display()
        )
    };
    let text = std::fs::read_to_string(&path).map_err(|e| manual(&e.to_string()))?;
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(serde_yaml::Value::deserialize)
        .collect::<Result<_, _>>()
        .map_err(|e| manual(&e.to_string()))?;
    if docs.len() != 1 || origin.item.is_some() {
        return Err(manual("the Node object shares its file with other objects"));
    }
    let mut doc = docs.into_iter().next().unwrap_or_default();
    let annotations = doc
        .get_mut("metadata")
        .and_then(|m| m.as_mapping_mut())
        .map(|m| {
            m.entry("annotations".into())
                .or_insert_with(|| serde_yaml::Value::Mapping(Default::default()))
        })
        .and_then(|a| {
            if a.is_null() {
                *a = serde_yaml::Value::Mapping(Default::default());
            }
            a.as_mapping_mut()
        })
        .ok_or_else(|| manual("its metadata is not a mapping"))?;
    annotations.insert(PUBLIC_KEY_ANNOTATION.into(), public.clone().into());
    let out = serde_yaml::to_string(&doc).map_err(|e| manual(&e.to_string()))?;
    let tmp = path.with_extension("weir-tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(out.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        manual(&e.to_string())
    })?;
    Ok(Some(format!(
        "published WireGuard public key {public} in {}",
        path.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_doc(annotations: &str) -> String {
        format!(
            "# node a\napiVersion: v1\nkind: Node\nmetadata:\n  name: node-a\n{annotations}spec:\n  \
             podCIDRs: [198.18.10.0/24]\nstatus:\n  addresses: [{{type: InternalIP, address: \
             198.18.250.1}}]\n"
        )
    }

    fn load(dir: &Path) -> Cluster {
        crate::agent::load_datastore(dir).unwrap().0
    }

    #[test]
    fn the_underlay_address_is_configured_or_the_nodes_internal_ip() {
        let dir = std::env::temp_dir().join(format!("weir-local-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("node-a.yaml"), node_doc("")).unwrap();
        let cluster = load(&dir);
        let mut w = WireGuardConfig {
            mode: default_mode(),
            port: default_port(),
            key_file: dir.join("key"),
            address: None,
        };
        let internal: IpAddr = "198.18.250.1".parse().unwrap();
        assert_eq!(local_address(&w, "node-a", &cluster), Ok(internal));
        let err = local_address(&w, "node-z", &cluster).unwrap_err();
        assert!(err.contains("node node-z has no Node object"), "{err}");
        w.address = Some("198.18.250.9".parse().unwrap());
        assert_eq!(
            local_address(&w, "node-z", &cluster),
            Ok("198.18.250.9".parse().unwrap())
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_key_is_published_in_a_node_file_of_its_own_and_not_in_a_shared_one() {
        let dir = std::env::temp_dir().join(format!("weir-publish-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let key = NodeKey::from_bytes([9; 32]);
        let file = dir.join("node-a.yaml");
        std::fs::write(&file, node_doc("")).unwrap();
        let done = publish_key("node-a", &key, &load(&dir)).unwrap();
        assert!(done.unwrap().contains(&key.public_base64()));
        let after = load(&dir);
        assert_eq!(check_published("node-a", &key, &after), None);
        assert_eq!(after.nodes["node-a"].pod_cidrs.len(), 1, "the rest is kept");
        assert_eq!(
            publish_key("node-a", &key, &after),
            Ok(None),
            "already published"
        );
        // A wrong key published is replaced too.
        let other = NodeKey::from_bytes([8; 32]);
        assert!(publish_key("node-a", &other, &after).unwrap().is_some());
        // Shared file: left alone, with a warning naming the annotation and the key.
        std::fs::write(
            &file,
            format!(
                "{}---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: x}}\n",
                node_doc("")
            ),
        )
        .unwrap();
        let warn = publish_key("node-a", &key, &load(&dir)).unwrap_err();
        assert!(warn.contains(PUBLIC_KEY_ANNOTATION) && warn.contains(&key.public_base64()));
        assert!(std::fs::read_to_string(&file)
            .unwrap()
            .starts_with("# node a"));
        // No Node object at all.
        std::fs::remove_file(&file).unwrap();
        assert!(publish_key("node-a", &key, &load(&dir)).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_key_file_is_created_private_and_a_readable_one_refused() {
        let dir = std::env::temp_dir().join(format!("weir-keyfile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub/wg.key");
        let (key, created) = load_or_create_key(&path).unwrap();
        assert!(created);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (again, created) = load_or_create_key(&path).unwrap();
        assert!(!created);
        assert_eq!(again.public_base64(), key.public_base64());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = load_or_create_key(&path).unwrap_err().to_string();
        assert!(
            e.contains("chmod 600") && !e.contains(&key.secret_base64()),
            "{e}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "not a key").unwrap();
        let e = load_or_create_key(&path).unwrap_err().to_string();
        assert!(e.contains("not a WireGuard private key"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
