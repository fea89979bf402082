//! The forwarding benchmark's topology: three network namespaces made for the run and
//! removed when the [`Lab`] drops (also on error or panic).
//!
//! ```text
//!  gen ns              node ns                         sink ns
//!  eth0 ──veth── wfg<pid>   [forwarder]   wfs<pid> ──veth── eth0
//!  198.18.9.1                                         198.18.9.2
//! ```
//!
//! For the source NAT cases ([`Lab::add_world`]) the sink's veth is also the node's
//! uplink to the world: `wfs<pid>` carries the node's address (198.18.10.1/24), the node's
//! default route goes through it to a gateway at 198.18.10.2 whose MAC is the sink's
//! (a permanent neighbour entry, so the node's kernel never sends an ARP request), and the
//! generator addresses a host in the world (198.18.100.1). The sink then sees every frame
//! as the world would: from the node's address if it was translated, from the pod's if
//! not.
//!
//! The generator and sink interfaces carry no address in their namespaces: frames are
//! written and read through AF_XDP, so the kernels there never send a frame of their own.
//! IPv6 is disabled in all three namespaces for the same reason (no router solicitations,
//! no MLD reports on the wire). Every name carries the process id. The generic helpers
//! (commands, MACs, the guard that removes the namespaces) are `weir_testkit::lab`.

use std::net::Ipv4Addr;

use weir_testkit::lab::{ip, mac_of, ns_exec, run, NetnsGuard};

pub use weir_testkit::lab::Mac;

/// The generator pod's address.
pub const GEN_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 9, 1);
/// The sink pod's address.
pub const SINK_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 9, 2);
/// The node's address on its uplink (the sink's veth), which source NAT gives pods'
/// traffic to the world.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 1);
/// The node's default gateway on the uplink; its MAC is the sink's.
pub const GATEWAY_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 2);
/// A host in the world, behind the gateway: the source NAT cases send to it.
pub const WORLD_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 100, 1);
/// The pods' pool: the generator and the sink pods are in it, the node and the world are
/// not.
pub const POD_CIDR: &str = "198.18.9.0/24";
/// The interface name inside the generator and sink namespaces.
pub const POD_IF: &str = "eth0";

/// The namespaces and veth pairs of one run.
#[derive(Debug)]
pub struct Lab {
    pub node: String,
    pub gen: String,
    pub sink: String,
    /// Node-side end of the generator's veth.
    pub gen_host: String,
    /// Node-side end of the sink's veth.
    pub sink_host: String,
    pub gen_mac: Mac,
    pub sink_mac: Mac,
    pub gen_host_mac: Mac,
    pub sink_host_mac: Mac,
    /// Deletes the namespaces (and with them the veths and any XDP program) on drop.
    guard: NetnsGuard,
}

impl Lab {
    /// Creates the namespaces and veths and brings them up.
    pub fn create() -> Result<Lab, String> {
        let pid = std::process::id();
        let mut lab = Lab {
            node: format!("weir-fwd-node-{pid}"),
            gen: format!("weir-fwd-gen-{pid}"),
            sink: format!("weir-fwd-sink-{pid}"),
            gen_host: format!("wfg{pid}"),
            sink_host: format!("wfs{pid}"),
            gen_mac: [0; 6],
            sink_mac: [0; 6],
            gen_host_mac: [0; 6],
            sink_host_mac: [0; 6],
            guard: NetnsGuard::new(),
        };
        for ns in [lab.node.clone(), lab.gen.clone(), lab.sink.clone()] {
            lab.guard.add_netns(&ns)?;
            for key in ["all", "default"] {
                ns_exec(
                    &ns,
                    &[
                        "sysctl",
                        "-q",
                        "-w",
                        &format!("net.ipv6.conf.{key}.disable_ipv6=1"),
                    ],
                )?;
            }
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        for (host, pod) in [
            (lab.gen_host.clone(), lab.gen.clone()),
            (lab.sink_host.clone(), lab.sink.clone()),
        ] {
            lab.guard.veth(&lab.node, &host, POD_IF, Some(&pod))?;
            ip(&["-n", &lab.node, "link", "set", &host, "up"])?;
            ip(&["-n", &pod, "link", "set", POD_IF, "up"])?;
        }
        lab.gen_mac = mac_of(&lab.gen, POD_IF)?;
        lab.sink_mac = mac_of(&lab.sink, POD_IF)?;
        lab.gen_host_mac = mac_of(&lab.node, &lab.gen_host)?;
        lab.sink_host_mac = mac_of(&lab.node, &lab.sink_host)?;
        Ok(lab)
    }

    /// Makes the sink's veth the node's uplink to the world (see the module doc): the
    /// node's address on it, a default route through the gateway, and the gateway's MAC
    /// (the sink's) as a permanent neighbour. It stays until the namespaces go; the
    /// forwarders that do not use it are not affected (their routes are more specific, and
    /// weir without an uplink sees it as one more node address).
    pub fn add_world(&self) -> Result<(), String> {
        let node = self.node.as_str();
        let dev = self.sink_host.as_str();
        ip(&[
            "-n",
            node,
            "addr",
            "add",
            &format!("{NODE_IP}/24"),
            "dev",
            dev,
        ])?;
        ip(&[
            "-n",
            node,
            "neigh",
            "replace",
            &GATEWAY_IP.to_string(),
            "lladdr",
            &weir_testkit::lab::format_mac(&self.sink_mac),
            "dev",
            dev,
            "nud",
            "permanent",
        ])?;
        ip(&[
            "-n",
            node,
            "route",
            "replace",
            "default",
            "via",
            &GATEWAY_IP.to_string(),
            "dev",
            dev,
        ])?;
        Ok(())
    }

    /// Whether an XDP program is attached to a node-side interface.
    pub fn xdp_attached(&self, host_if: &str) -> Result<bool, String> {
        let out = run(&["ip", "-n", &self.node, "link", "show", "dev", host_if])?;
        Ok(out.contains(" xdp") || out.contains("prog/xdp"))
    }
}

#[cfg(test)]
mod tests {
    use weir_control::agent::parse_mac;
    use weir_testkit::lab::format_mac;

    #[test]
    fn macs_round_trip_and_bad_ones_are_refused() {
        let mac = parse_mac("0a:1b:2c:3d:4e:5f").unwrap();
        assert_eq!(format_mac(&mac), "0a:1b:2c:3d:4e:5f");
        assert_eq!(parse_mac("0a:1b:2c:3d:4e"), None);
        assert_eq!(parse_mac("0a:1b:2c:3d:4e:5f:00"), None);
        assert_eq!(parse_mac("zz:1b:2c:3d:4e:5f"), None);
    }
}
