//! The forwarders `weir-bench forward` compares, each started in the node namespace on the
//! same two veths and stopped again (cleanly, or by force from `Drop`):
//!
//! - **weir**: the real `weir agent` binary with `cores: [cpu]` and no host link (no case
//!   here involves the node's own stack), its datastore holding the two pods and, for the policy variant, a Kubernetes NetworkPolicy with `rules` ingress
//!   rules on the sink pod.
//! - **testpmd**: `dpdk-testpmd` in `io` forwarding mode over two `net_af_xdp` ports, its
//!   forwarding lcore on `cpu` (its main lcore, which only waits for Enter, on the
//!   generator's CPU). It loads its own XDP program and removes it on exit.
//! - **kernel**: IPv4 forwarding in the node namespace, with the generator veth's receive
//!   processing steered to `cpu` by RPS (otherwise it would run on the generator's CPU,
//!   where veth delivers), static routes and a permanent neighbour entry for the sink;
//!   for the policy variant an nftables forward chain with the same rules as the weir
//!   policy, in the same order, ending in a drop.
//!
//! And the pod → world cases, on the lab's world wiring ([`Lab::add_world`]): the
//! generator sends to a host behind the node's default gateway, and the frames must leave
//! with the node's address.
//!
//! - **weir_snat**: the agent with the sink's veth as its uplink (`uplink`, `podCidrs`),
//!   the default route and the gateway's MAC learned from the node namespace's kernel as
//!   on a real node, and an IPPool with `natOutgoing: true` holding the generator pod; the
//!   datastore names only the generator pod (the sink is the world now).
//! - **kernel_masquerade**: the kernel's forwarding as above, through the same default
//!   route, with an nftables `masquerade` rule in a table of the node namespace: the
//!   kernel's own source NAT, connection tracking included.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use super::lab::{Lab, Mac, GEN_IP, NODE_IP, POD_CIDR, SINK_IP, WORLD_IP};
use super::traffic::{Target, UDP_PORT};
use crate::services::kube_proxy;
use crate::services::model::{cluster_ip, ServiceSet, TARGET_PORT};
use weir_testkit::lab::{format_mac, ns_exec, run};

/// Which forwarder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// weir, with `rules` policy rules on the sink (0: no policy).
    Weir { rules: usize },
    /// dpdk-testpmd io forwarding over net_af_xdp.
    Testpmd,
    /// Linux routing, with an nftables chain of `rules` rules (0: no nftables).
    Kernel { rules: usize },
    /// weir, pod → world with source NAT to the node's address.
    WeirSnat,
    /// Linux routing, pod → world with nftables `masquerade`.
    KernelMasquerade,
    /// weir, pod → a ClusterIP among `services` services of `endpoints` endpoints each
    /// (`weir-bench services`).
    WeirService { services: usize, endpoints: usize },
    /// Linux routing with kube-proxy's rules for the same services, in its nftables mode
    /// (`nft`) or its iptables mode (`iptables-nft-restore`).
    KubeProxy {
        mode: KubeProxyMode,
        services: usize,
        endpoints: usize,
    },
}

/// Which of kube-proxy's modes writes the kernel's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KubeProxyMode {
    /// nftables mode (`nft -f`).
    Nftables,
    /// iptables mode on the legacy x_tables backend (`iptables-legacy-restore`).
    Iptables,
    /// iptables mode on the nf_tables backend (`iptables-nft-restore`), Debian's default
    /// `iptables`; it loads 10k services × 10 endpoints in minutes, not seconds.
    IptablesNft,
}

/// The longest a kube-proxy ruleset may take to load before it is killed and the case
/// reported as failed.
pub const RULESET_LOAD_TIMEOUT: Duration = Duration::from_secs(300);

impl Kind {
    /// The name results carry: `weir`, `weir_1k_rules`, `testpmd_io`, `kernel`,
    /// `kernel_nft_1k_rules`, `weir_snat`, `kernel_masquerade`.
    pub fn label(&self) -> String {
        match *self {
            Kind::Weir { rules: 0 } => "weir".into(),
            Kind::Weir { rules } => format!("weir_{}_rules", crate::report::count_label(rules)),
            Kind::Testpmd => "testpmd_io".into(),
            Kind::Kernel { rules: 0 } => "kernel".into(),
            Kind::Kernel { rules } => {
                format!("kernel_nft_{}_rules", crate::report::count_label(rules))
            }
            Kind::WeirSnat => "weir_snat".into(),
            Kind::KernelMasquerade => "kernel_masquerade".into(),
            Kind::WeirService { services, .. } => {
                format!("weir_svc_{}", crate::report::count_label(services))
            }
            Kind::KubeProxy { mode, services, .. } => format!(
                "kernel_{}_svc_{}",
                match mode {
                    KubeProxyMode::Nftables => "nft",
                    KubeProxyMode::Iptables => "ipt",
                    KubeProxyMode::IptablesNft => "iptnft",
                },
                crate::report::count_label(services)
            ),
        }
    }

    /// The services this forwarder holds and the one the traffic goes to (service kinds).
    pub fn service_set(&self) -> Option<ServiceSet> {
        match *self {
            Kind::WeirService {
                services,
                endpoints,
            }
            | Kind::KubeProxy {
                services,
                endpoints,
                ..
            } => Some(ServiceSet::generate(
                services,
                endpoints,
                (SINK_IP, UDP_PORT),
            )),
            _ => None,
        }
    }

    /// Whether this forwarder translates the generator's traffic to the world.
    pub fn translates(&self) -> bool {
        matches!(self, Kind::WeirSnat | Kind::KernelMasquerade)
    }

    /// Where the generator sends for this forwarder, and the source the sink expects.
    pub fn target(&self) -> Target {
        if let Kind::WeirService { services, .. } | Kind::KubeProxy { services, .. } = *self {
            return Target {
                dst_ip: cluster_ip(services.max(1) / 2),
                dst_port: TARGET_PORT,
                sink_src: GEN_IP,
                sink_dst: SINK_IP,
            };
        }
        if self.translates() {
            Target {
                dst_ip: WORLD_IP,
                dst_port: UDP_PORT,
                sink_src: NODE_IP,
                sink_dst: WORLD_IP,
            }
        } else {
            Target::direct(GEN_IP, SINK_IP)
        }
    }
}

/// One rule of the benchmark policy: traffic from `source` to the sink on `protocol`
/// (6 or 17) port `port` is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub source: Ipv4Addr,
    pub protocol: u8,
    pub port: u16,
}

/// `n` rules: distinct TCP sources in 198.19.0.0/16 with varied ports, and, in the middle,
/// the one rule the benchmark traffic matches (UDP from the generator to port 9). A
/// first-match list must walk half of it; weir's index does not care where it is.
pub fn bench_rules(n: usize) -> Vec<Rule> {
    let mut rules: Vec<Rule> = (0..n.saturating_sub(1))
        .map(|i| Rule {
            source: Ipv4Addr::new(198, 19, (i / 250) as u8, (i % 250 + 1) as u8),
            protocol: 6,
            port: 1000 + (i % 5000) as u16,
        })
        .collect();
    if n > 0 {
        rules.insert(
            rules.len() / 2,
            Rule {
                source: GEN_IP,
                protocol: 17,
                port: UDP_PORT,
            },
        );
    }
    rules
}

/// A pod of the benchmark's namespace, with its host-side interface and MAC as
/// annotations.
fn pod_yaml(name: &str, ip: Ipv4Addr, host: &str, mac: &Mac) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  namespace: bench\n  name: {name}\n  \
         labels: {{app: {name}}}\n  annotations:\n    weir.dev/interface: {host}\n    \
         weir.dev/mac: \"{}\"\nstatus:\n  podIPs: [{{ip: \"{ip}\"}}]\n",
        format_mac(mac)
    )
}

/// The name of the pods' IPPool in the source NAT case.
pub const POOL_NAME: &str = "bench-pool";

/// The weir datastore of the source NAT case: the namespace, the generator pod, and the
/// pods' pool with `natOutgoing: true` (the sink's veth is the uplink, not a pod).
pub fn weir_snat_datastore(gen: (&str, &Mac)) -> String {
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: bench\n---\n{}---\n\
         apiVersion: weir.dev/v1\nkind: IPPool\nmetadata: {{name: {POOL_NAME}}}\n\
         spec: {{cidr: \"{POD_CIDR}\", natOutgoing: true}}\n",
        pod_yaml("gen", GEN_IP, gen.0, gen.1),
    )
}

/// The nftables ruleset of the kernel's source NAT case: pod traffic leaving through the
/// uplink `uplink` is masqueraded to the uplink's address.
pub fn nft_masquerade(table: &str, uplink: &str) -> String {
    format!(
        "table ip {table} {{\n  chain postrouting {{\n    type nat hook postrouting priority \
         srcnat; policy accept;\n    oifname \"{uplink}\" ip saddr {POD_CIDR} masquerade\n  }}\n}}\n"
    )
}

/// The weir datastore: the namespace, the two pods (their host-side interfaces and MACs
/// as annotations) and, when `rules` is not empty, the NetworkPolicy on the sink.
pub fn weir_datastore(gen: (&str, &Mac), sink: (&str, &Mac), rules: &[Rule]) -> String {
    let mut text = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: bench\n---\n{}---\n{}",
        pod_yaml("gen", GEN_IP, gen.0, gen.1),
        pod_yaml("sink", SINK_IP, sink.0, sink.1),
    );
    if !rules.is_empty() {
        text.push_str(
            "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  \
             namespace: bench\n  name: sink-ingress\nspec:\n  podSelector:\n    \
             matchLabels: {app: sink}\n  policyTypes: [Ingress]\n  ingress:\n",
        );
        for r in rules {
            text.push_str(&format!(
                "  - from: [{{ipBlock: {{cidr: {}/32}}}}]\n    ports: [{{protocol: {}, port: {}}}]\n",
                r.source,
                if r.protocol == 17 { "UDP" } else { "TCP" },
                r.port
            ));
        }
    }
    text
}

/// The nftables ruleset equivalent to `rules` on the sink: a forward hook that sends the
/// sink's traffic through the rules in order, and drops what none accepts.
pub fn nft_ruleset(table: &str, rules: &[Rule]) -> String {
    let mut text = format!(
        "table ip {table} {{\n  chain forward {{\n    type filter hook forward priority 0; \
         policy accept;\n    ip daddr {SINK_IP} jump sink_ingress\n  }}\n  chain sink_ingress {{\n"
    );
    for r in rules {
        text.push_str(&format!(
            "    ip saddr {} {} dport {} accept\n",
            r.source,
            if r.protocol == 17 { "udp" } else { "tcp" },
            r.port
        ));
    }
    text.push_str("    drop\n  }\n}\n");
    text
}

/// What the forwarders need besides the lab.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The forwarder's CPU.
    pub cpu: usize,
    /// The generator's CPU (testpmd's idle main lcore goes there).
    pub gen_cpu: usize,
    /// The `weir` binary.
    pub weir: PathBuf,
    /// Scratch directory (configs, logs).
    pub workdir: PathBuf,
    /// A hugetlbfs mount for testpmd, if one could be made.
    pub huge_dir: Option<PathBuf>,
}

/// What the weir agent is started for.
#[derive(Debug, Clone, Copy)]
enum WeirCase {
    /// Pod to pod, with `rules` policy rules on the sink.
    Plain { rules: usize },
    /// Pod to the world through the uplink, source NAT to the node's address.
    Snat,
    /// Pod to a ClusterIP, with these services in the datastore.
    Services,
}

/// Which iptables a kernel forwarder loaded kube-proxy's rules with.
#[derive(Debug, Clone, Copy)]
enum IptBackend {
    Legacy,
    Nft,
}

/// What the kernel forwarder adds to plain routing.
#[derive(Debug, Clone, Copy)]
enum KernelCase {
    /// An nftables forward chain of this many rules (0: none).
    Rules(usize),
    /// An nftables `masquerade` on the uplink.
    Masquerade,
    /// kube-proxy's rules for the kind's services.
    KubeProxy(KubeProxyMode),
}

/// A started forwarder; [`Running::stop`] stops it and reports whether it left the
/// interfaces clean. Dropping it without `stop` forces it down.
#[derive(Debug)]
pub struct Running<'a> {
    kind: Kind,
    lab: &'a Lab,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    log: PathBuf,
    nft_table: Option<String>,
    /// The iptables backend whose nat and filter tables to empty when the kernel forwarder
    /// stops.
    ipt_tables: Option<IptBackend>,
    kernel: bool,
    /// Seconds the kernel's ruleset took to load (`nft -f`, `iptables-nft-restore`).
    pub load_seconds: Option<f64>,
}

impl<'a> Running<'a> {
    /// Starts `kind` and waits until it says it is up.
    pub fn start(kind: Kind, lab: &'a Lab, setup: &Setup) -> Result<Running<'a>, String> {
        let log = setup.workdir.join(format!("{}.log", kind.label()));
        let mut running = Running {
            kind,
            lab,
            child: None,
            stdin: None,
            log: log.clone(),
            nft_table: None,
            ipt_tables: None,
            kernel: false,
            load_seconds: None,
        };
        match kind {
            Kind::Weir { rules } => running.start_weir(setup, WeirCase::Plain { rules })?,
            Kind::WeirSnat => running.start_weir(setup, WeirCase::Snat)?,
            Kind::Testpmd => running.start_testpmd(setup)?,
            Kind::Kernel { rules } => running.start_kernel(setup, KernelCase::Rules(rules))?,
            Kind::KernelMasquerade => running.start_kernel(setup, KernelCase::Masquerade)?,
            Kind::WeirService { .. } => running.start_weir(setup, WeirCase::Services)?,
            Kind::KubeProxy { mode, .. } => {
                running.start_kernel(setup, KernelCase::KubeProxy(mode))?
            }
        }
        Ok(running)
    }

    fn start_weir(&mut self, setup: &Setup, case: WeirCase) -> Result<(), String> {
        if !setup.weir.is_file() {
            return Err(format!(
                "{} not found: build it with `cargo build --release -p weir-control` (or pass \
                 --weir)",
                setup.weir.display()
            ));
        }
        let label = self.kind.label();
        let ds = setup.workdir.join(format!("datastore-{label}"));
        std::fs::create_dir_all(&ds).map_err(|e| format!("{}: {e}", ds.display()))?;
        let write = |path: &Path, text: &str| {
            std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
        };
        let gen = (self.lab.gen_host.as_str(), &self.lab.gen_mac);
        let (cluster, extra) = match case {
            WeirCase::Plain { rules } => (
                weir_datastore(
                    gen,
                    (&self.lab.sink_host, &self.lab.sink_mac),
                    &bench_rules(rules),
                ),
                String::new(),
            ),
            WeirCase::Services => {
                let set = self.kind.service_set().expect("a service kind");
                let mut text = weir_datastore(gen, (&self.lab.sink_host, &self.lab.sink_mac), &[]);
                text.push_str(&crate::services::datastore::services_yaml(
                    &set, "bench", "sink",
                ));
                (text, String::new())
            }
            WeirCase::Snat => (
                weir_snat_datastore(gen),
                format!(
                    "uplink: {}\npodCidrs: [\"{POD_CIDR}\"]\n",
                    self.lab.sink_host
                ),
            ),
        };
        write(&ds.join("cluster.yaml"), &cluster)?;
        let config = setup.workdir.join(format!("agent-{label}.yaml"));
        // No host link: no case here sends between pods and the node's own stack, and a
        // worker holding one more port would be one more thing the figures depend on.
        write(
            &config,
            &format!(
                "node: bench\ncores: [{}]\ndatastore: {}\nlisten: 127.0.0.1:9180\nframes: 4096\n\
                 host: {{enabled: false}}\n{extra}",
                setup.cpu,
                ds.display()
            ),
        )?;
        let log = std::fs::File::create(&self.log).map_err(|e| e.to_string())?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.lab.node])
            .arg(&setup.weir)
            .arg("agent")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("weir agent: {e}"))?;
        self.child = Some(child);
        self.wait_for_log("forwarding on core", Duration::from_secs(30))
    }

    fn start_testpmd(&mut self, setup: &Setup) -> Result<(), String> {
        let testpmd = crate::tools::require("dpdk-testpmd").map_err(|e| e.to_string())?;
        let lab = self.lab;
        let mut cmd = Command::new("ip");
        // Line-buffered, so that its "Press enter to exit" reaches the log when printed.
        cmd.args(["netns", "exec", &lab.node, "stdbuf", "-oL", "-eL"])
            .arg(testpmd)
            .arg("-l")
            .arg(format!("{},{}", setup.gen_cpu, setup.cpu))
            .arg("--main-lcore")
            .arg(setup.gen_cpu.to_string())
            .args(["--no-pci", "--file-prefix"])
            .arg(testpmd_prefix());
        match &setup.huge_dir {
            Some(dir) => {
                cmd.arg("--huge-dir").arg(dir).args(["-m", "512"]);
            }
            None => {
                cmd.args(["--no-huge", "-m", "1024"]);
            }
        }
        cmd.arg("--vdev")
            .arg(format!("net_af_xdp0,iface={}", lab.gen_host))
            .arg("--vdev")
            .arg(format!("net_af_xdp1,iface={}", lab.sink_host))
            .args([
                "--",
                "--forward-mode=io",
                "--auto-start",
                "--nb-cores=1",
                "--total-num-mbufs=16384",
            ]);
        let log = std::fs::File::create(&self.log).map_err(|e| e.to_string())?;
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("dpdk-testpmd: {e}"))?;
        self.stdin = child.stdin.take();
        self.child = Some(child);
        self.wait_for_log("Press enter to exit", Duration::from_secs(60))
    }

    fn start_kernel(&mut self, setup: &Setup, case: KernelCase) -> Result<(), String> {
        self.kernel = true;
        let lab = self.lab;
        let node = lab.node.as_str();
        for setting in [
            "net.ipv4.ip_forward=1".to_string(),
            "net.ipv4.conf.all.rp_filter=0".to_string(),
            "net.ipv4.conf.default.rp_filter=0".to_string(),
            format!("net.ipv4.conf.{}.rp_filter=0", lab.gen_host),
        ] {
            ns_exec(node, &["sysctl", "-q", "-w", &setting])?;
        }
        let sink = format!("{SINK_IP}/32");
        let gen = format!("{GEN_IP}/32");
        run(&[
            "ip",
            "-n",
            node,
            "route",
            "replace",
            &sink,
            "dev",
            &lab.sink_host,
        ])?;
        run(&[
            "ip",
            "-n",
            node,
            "route",
            "replace",
            &gen,
            "dev",
            &lab.gen_host,
        ])?;
        run(&[
            "ip",
            "-n",
            node,
            "neigh",
            "replace",
            &SINK_IP.to_string(),
            "lladdr",
            &format_mac(&lab.sink_mac),
            "dev",
            &lab.sink_host,
            "nud",
            "permanent",
        ])?;
        let mask = format!("{:x}", 1u64 << setup.cpu);
        ns_exec(
            node,
            &[
                "sh",
                "-c",
                &format!(
                    "echo {mask} > /sys/class/net/{}/queues/rx-0/rps_cpus",
                    lab.gen_host
                ),
            ],
        )?;
        if let KernelCase::KubeProxy(mode) = case {
            return self.load_kube_proxy(setup, mode);
        }
        let table = format!("weir_bench_{}", std::process::id());
        let ruleset = match case {
            KernelCase::KubeProxy(_) => None,
            KernelCase::Rules(0) => None,
            KernelCase::Rules(rules) => Some(nft_ruleset(&table, &bench_rules(rules))),
            KernelCase::Masquerade => Some(nft_masquerade(&table, &lab.sink_host)),
        };
        if let Some(ruleset) = ruleset {
            let file = setup.workdir.join("ruleset.nft");
            std::fs::write(&file, ruleset).map_err(|e| format!("{}: {e}", file.display()))?;
            let file = file.display().to_string();
            // Set before loading, so that a half-loaded table is still removed.
            self.nft_table = Some(table);
            ns_exec(node, &["nft", "-f", &file])?;
        }
        Ok(())
    }

    /// Loads kube-proxy's rules for the kind's services into the node namespace, timed.
    fn load_kube_proxy(&mut self, setup: &Setup, mode: KubeProxyMode) -> Result<(), String> {
        let set = self.kind.service_set().expect("a service kind");
        let node = self.lab.node.as_str();
        let (file, text) = match mode {
            KubeProxyMode::Nftables => (
                setup.workdir.join("kube-proxy.nft"),
                kube_proxy::nft_ruleset(&set, NODE_IP),
            ),
            KubeProxyMode::Iptables | KubeProxyMode::IptablesNft => (
                setup.workdir.join("kube-proxy.iptables"),
                kube_proxy::iptables_restore(&set),
            ),
        };
        std::fs::write(&file, text).map_err(|e| format!("{}: {e}", file.display()))?;
        let path = file.display().to_string();
        // Set before loading, so that a half-loaded ruleset is still removed.
        let (program, args): (&str, Vec<&str>) = match mode {
            KubeProxyMode::Nftables => {
                self.nft_table = Some(kube_proxy::NFT_TABLE.to_string());
                ("nft", vec!["-f", &path])
            }
            KubeProxyMode::Iptables => {
                self.ipt_tables = Some(IptBackend::Legacy);
                ("iptables-legacy-restore", vec!["--noflush", &path])
            }
            KubeProxyMode::IptablesNft => {
                self.ipt_tables = Some(IptBackend::Nft);
                ("iptables-nft-restore", vec!["--noflush", &path])
            }
        };
        let program = crate::tools::require(program).map_err(|e| e.to_string())?;
        let started = Instant::now();
        let mut child = Command::new("ip")
            .args(["netns", "exec", node])
            .arg(&program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{}: {e}", program.display()))?;
        // `ip netns exec` execs the loader: the child is the loader itself.
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => break,
                Ok(Some(status)) => {
                    let mut err = String::new();
                    if let Some(mut e) = child.stderr.take() {
                        let _ = std::io::Read::read_to_string(&mut e, &mut err);
                    }
                    return Err(format!(
                        "{} {} failed ({status}): {}",
                        program.display(),
                        args.join(" "),
                        crate::dpdk::tail(&err, 10)
                    ));
                }
                Ok(None) if started.elapsed() < RULESET_LOAD_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "{}: loading {} services × {} endpoints took more than {} s (killed)",
                        self.kind.label(),
                        set.services.len(),
                        set.services.first().map_or(0, |s| s.endpoints.len()),
                        RULESET_LOAD_TIMEOUT.as_secs()
                    ));
                }
            }
        }
        self.load_seconds = Some(started.elapsed().as_secs_f64());
        Ok(())
    }

    fn wait_for_log(&mut self, line: &str, timeout: Duration) -> Result<(), String> {
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if text.contains(line) {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "{} exited ({status}) before it was up:\n{}",
                        self.kind.label(),
                        crate::dpdk::tail(&text, 15)
                    ));
                }
            }
            if started.elapsed() > timeout {
                return Err(format!(
                    "{} not up after {} s:\n{}",
                    self.kind.label(),
                    timeout.as_secs(),
                    crate::dpdk::tail(&text, 15)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the forwarder and checks that it left no XDP program behind.
    pub fn stop(mut self) -> Result<(), String> {
        let result = self.shut_down(false);
        let lab = self.lab;
        for dev in [&lab.gen_host, &lab.sink_host] {
            if lab.xdp_attached(dev)? {
                let _ = run(&[
                    "ip", "-n", &lab.node, "link", "set", "dev", dev, "xdp", "off",
                ]);
                return Err(format!(
                    "{} left an XDP program on {dev} (removed)",
                    self.kind.label()
                ));
            }
        }
        result
    }

    fn shut_down(&mut self, force: bool) -> Result<(), String> {
        let mut result = Ok(());
        if let Some(mut stdin) = self.stdin.take() {
            // testpmd: Enter ends it.
            let _ = stdin.write_all(b"\n");
        }
        if let Some(mut child) = self.child.take() {
            let pid = child.id() as libc::pid_t;
            if !force && self.kind != Kind::Testpmd {
                // SAFETY: kill(2) on the pid of a child this process started and has not
                // yet reaped, so the pid cannot have been reused.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            let deadline = Instant::now() + Duration::from_secs(if force { 0 } else { 15 });
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        if !status.success() && !force {
                            result = Err(format!(
                                "{} exited with {status}: {}",
                                self.kind.label(),
                                crate::dpdk::tail(
                                    &std::fs::read_to_string(&self.log).unwrap_or_default(),
                                    10
                                )
                            ));
                        }
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    _ => {
                        let _ = child.kill();
                        let _ = child.wait();
                        if !force {
                            result = Err(format!(
                                "{} did not stop within 15 s; killed",
                                self.kind.label()
                            ));
                        }
                        break;
                    }
                }
            }
            if self.kind == Kind::Testpmd {
                // EAL's runtime directory (its sockets and config) outlives the process.
                let _ = std::fs::remove_dir_all(
                    std::path::Path::new("/var/run/dpdk").join(testpmd_prefix()),
                );
            }
        }
        if self.kernel {
            self.kernel = false;
            let lab = self.lab;
            let node = lab.node.as_str();
            if let Some(table) = self.nft_table.take() {
                if let Err(e) = ns_exec(node, &["nft", "delete", "table", "ip", &table]) {
                    result = result.and(Err(e.to_string()));
                }
            }
            match self.ipt_tables.take() {
                // iptables-nft keeps its tables as nftables tables of family ip.
                Some(IptBackend::Nft) => {
                    for table in ["nat", "filter"] {
                        if let Err(e) = ns_exec(node, &["nft", "delete", "table", "ip", table]) {
                            result = result.and(Err(e.to_string()));
                        }
                    }
                }
                Some(IptBackend::Legacy) => {
                    for table in ["nat", "filter"] {
                        for op in ["-F", "-X"] {
                            if let Err(e) = ns_exec(node, &["iptables-legacy", "-t", table, op]) {
                                result = result.and(Err(e.to_string()));
                            }
                        }
                    }
                }
                None => {}
            }
            let _ = ns_exec(node, &["sysctl", "-q", "-w", "net.ipv4.ip_forward=0"]);
            let _ = ns_exec(
                node,
                &[
                    "sh",
                    "-c",
                    &format!(
                        "echo 0 > /sys/class/net/{}/queues/rx-0/rps_cpus",
                        lab.gen_host
                    ),
                ],
            );
            for net in [format!("{SINK_IP}/32"), format!("{GEN_IP}/32")] {
                let _ = run(&["ip", "-n", node, "route", "del", &net]);
            }
            let _ = run(&[
                "ip",
                "-n",
                node,
                "neigh",
                "del",
                &SINK_IP.to_string(),
                "dev",
                &lab.sink_host,
            ]);
        }
        result
    }
}

/// testpmd's EAL file prefix: this process's, so parallel runs do not collide.
fn testpmd_prefix() -> String {
    format!("weir-fwd-{}", std::process::id())
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let _ = self.shut_down(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_benchmark_rule_is_in_the_middle_and_sources_are_distinct() {
        let rules = bench_rules(1000);
        assert_eq!(rules.len(), 1000);
        let at = rules
            .iter()
            .position(|r| r.source == GEN_IP && r.protocol == 17 && r.port == UDP_PORT)
            .unwrap();
        assert_eq!(at, 499);
        let mut sources: Vec<_> = rules.iter().map(|r| r.source).collect();
        sources.sort();
        sources.dedup();
        assert_eq!(sources.len(), 1000);
        assert!(bench_rules(0).is_empty());
    }

    #[test]
    fn the_weir_datastore_loads_and_compiles_to_the_same_rules() {
        let text = weir_datastore(
            ("wfg1", &[2, 0, 0, 0, 0, 1]),
            ("wfs1", &[2, 0, 0, 0, 0, 2]),
            &bench_rules(1000),
        );
        let cluster =
            weir_control::policy::load::Cluster::from_sources([("bench.yaml", text.as_str())])
                .unwrap();
        assert_eq!(cluster.pods.len(), 2);
        let compiled = weir_control::policy::compile::compile(&cluster);
        assert_eq!(compiled.endpoints.len(), 2);
        let id = |name: &str| {
            compiled
                .endpoints
                .iter()
                .find(|(n, _)| n.name == name)
                .map(|(_, &id)| id)
        };
        let verdict = |proto: u8, port: u16| {
            let key = weir_dataplane::flow::FlowKey {
                src: weir_dataplane::flow::FlowKey::map_v4(GEN_IP.octets()),
                dst: weir_dataplane::flow::FlowKey::map_v4(SINK_IP.octets()),
                src_port: 1024,
                dst_port: port,
                proto,
            };
            compiled
                .tables
                .evaluate(id("gen"), id("sink"), &key)
                .verdict
        };
        use weir_dataplane::policy::Verdict;
        assert_eq!(verdict(17, UDP_PORT), Verdict::Allow);
        assert_eq!(verdict(17, UDP_PORT + 1), Verdict::Deny);
        assert_eq!(verdict(6, UDP_PORT), Verdict::Deny);
        let plain = weir_datastore(("a", &[2; 6]), ("b", &[4; 6]), &[]);
        assert!(!plain.contains("NetworkPolicy"));
    }

    #[test]
    fn the_snat_datastore_puts_the_generator_in_a_translated_pool_and_the_world_outside() {
        let text = weir_snat_datastore(("wfg1", &[2, 0, 0, 0, 0, 1]));
        let cluster =
            weir_control::policy::load::Cluster::from_sources([("bench.yaml", text.as_str())])
                .unwrap();
        assert_eq!(cluster.pods.len(), 1);
        let pool = &cluster.ip_pools[POOL_NAME];
        assert!(pool.nat_outgoing);
        assert!(pool.cidr.contains(&std::net::IpAddr::V4(GEN_IP)));
        for outside in [NODE_IP, WORLD_IP, super::super::lab::GATEWAY_IP] {
            assert!(
                !pool.cidr.contains(&std::net::IpAddr::V4(outside)),
                "{outside}"
            );
        }
        assert_eq!(
            Kind::WeirSnat.target(),
            Target {
                dst_ip: WORLD_IP,
                dst_port: UDP_PORT,
                sink_src: NODE_IP,
                sink_dst: WORLD_IP,
            }
        );
        assert_eq!(Kind::Weir { rules: 0 }.target().sink_src, GEN_IP);
    }

    #[test]
    fn the_masquerade_ruleset_translates_only_the_pods_leaving_by_the_uplink() {
        let text = nft_masquerade("t", "wfs7");
        assert!(text.contains("type nat hook postrouting priority srcnat;"));
        assert!(text.contains(&format!("oifname \"wfs7\" ip saddr {POD_CIDR} masquerade")));
        assert_eq!(Kind::KernelMasquerade.label(), "kernel_masquerade");
        assert_eq!(Kind::WeirSnat.label(), "weir_snat");
    }

    #[test]
    fn the_nft_ruleset_has_every_rule_in_order_and_ends_in_drop() {
        let rules = bench_rules(5);
        let text = nft_ruleset("t", &rules);
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("ip saddr"))
            .collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[2], format!("ip saddr {GEN_IP} udp dport 9 accept"));
        assert!(text.trim_end().ends_with("drop\n  }\n}") || text.contains("    drop\n"));
    }
}
