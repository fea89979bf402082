//! `weir`: the agent and its tools.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "weir",
    version,
    about = "Kubernetes networking with a userspace dataplane"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the demo (root): a two-node cluster on this machine built from network
    /// namespaces, two agents with WireGuard between them, six pods attached by weir-cni,
    /// example policies in tiers; prints the connectivity matrix (expected versus seen),
    /// throughput and round trips. Exits non-zero if any probe differs. Removes everything
    /// on exit and on Ctrl-C.
    Demo {
        /// Leave the cluster running, and print how to look at it.
        #[arg(long)]
        keep: bool,
        /// Remove a cluster left by `--keep`, then exit.
        #[arg(long, conflicts_with_all = ["keep", "in_memory"])]
        down: bool,
        /// Seconds of each iperf3 run.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=60))]
        seconds: u32,
        /// UDP round trips timed per pair.
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=100_000))]
        round_trips: u64,
        /// Instead, the pipeline alone, without root: scripted frames through the embedded
        /// default node in memory, expected versus seen.
        #[arg(long)]
        in_memory: bool,
        /// Leave this object out of the demo's datastore (the matrix then differs, and the
        /// demo fails): for testing the demo itself.
        #[arg(long, hide = true, value_name = "NAME")]
        without_policy: Option<String>,
    },
    /// A running agent's state from its /readyz and /metrics: readiness, snapshot
    /// generation, packets, drops by reason, WireGuard, pods attached.
    Status {
        /// The agent's listen port on 127.0.0.1 (run inside its network namespace).
        #[arg(long, default_value_t = 9180)]
        port: u16,
    },
    /// A running agent's services from its /services: each service port, its frontends,
    /// its backends with their conditions, and which of them take new connections.
    Services {
        /// The agent's listen port on 127.0.0.1 (run inside its network namespace).
        #[arg(long, default_value_t = 9180)]
        port: u16,
        /// Print the agent's JSON as it is.
        #[arg(long)]
        json: bool,
    },
    /// The demo's probes (run inside a pod's namespace by the demo).
    #[command(hide = true)]
    Probe {
        #[command(subcommand)]
        command: ProbeCommand,
    },
    /// Run the node agent: attach the configured interfaces to an AF_XDP worker and forward
    /// with policy from the file datastore, until SIGTERM or SIGINT.
    Agent {
        /// The agent's YAML configuration (node, uplink, podCidrs, cores, datastore,
        /// listen, frames).
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Network policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Write the weir.dev CustomResourceDefinitions (one YAML file per CRD and a
    /// kustomization.yaml), or check that a directory holds exactly what would be written.
    Crds {
        /// The directory to write into (created if needed).
        #[arg(
            long,
            value_name = "DIR",
            required_unless_present = "check",
            conflicts_with = "check"
        )]
        out: Option<PathBuf>,
        /// The directory to compare; exits non-zero naming the files that differ, are
        /// missing or are not generated.
        #[arg(long, value_name = "DIR")]
        check: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum ProbeCommand {
    /// TCP and UDP echo on --port until --seconds pass.
    Serve {
        #[arg(long)]
        port: u16,
        #[arg(long, default_value_t = 300)]
        seconds: u64,
    },
    /// Exit 0 when a TCP echo to --to answers within --timeout-ms.
    Tcp {
        #[arg(long)]
        to: std::net::SocketAddr,
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
    },
    /// Exit 0 when a UDP echo to --to answers within --timeout-ms.
    Udp {
        #[arg(long)]
        to: std::net::SocketAddr,
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
    },
    /// --count sequential UDP echoes to --to: a JSON list of round trips in microseconds
    /// (null for no answer within --timeout-ms).
    Rtt {
        #[arg(long)]
        to: std::net::SocketAddr,
        #[arg(long, default_value_t = 100)]
        count: usize,
        #[arg(long, default_value_t = 1000)]
        timeout_ms: u64,
    },
    /// GET a path from 127.0.0.1:--port; prints the body, exit 0 on status 200.
    Http {
        #[arg(long)]
        port: u16,
        path: String,
    },
}

#[derive(Subcommand, Debug)]
enum PolicyCommand {
    /// Decide probes against Kubernetes YAML (Namespaces, Pods, ServiceAccounts, Kubernetes
    /// NetworkPolicies, weir.dev objects) with the compiled classifier the dataplane runs.
    /// Prints {"verdicts": [...], "explanations": [...]}, one entry per probe.
    Eval {
        /// A multi-document YAML file; repeat for several.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
        /// A JSON list of probes: [{"from": "ns/pod", "to": "ns/pod", "port": 80,
        /// "protocol": "TCP"}]; from/to may be IP addresses outside the cluster.
        #[arg(long)]
        probes: PathBuf,
        /// Which of the pods' addresses to use.
        #[arg(long, default_value = "IPv4", value_parser = ["IPv4", "IPv6"])]
        family: String,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Demo {
            keep,
            down,
            seconds,
            round_trips,
            in_memory,
            without_policy,
        } => {
            let run = || -> Result<bool, String> {
                if down {
                    println!("{}", weir_control::demo::cluster::down()?);
                    return Ok(true);
                }
                if in_memory {
                    let (report, ok) = weir_control::demo::frames::run()?;
                    print!("{report}");
                    return Ok(ok);
                }
                weir_workers::signals::install()
                    .map_err(|e| format!("installing signal handlers: {e}"))?;
                let opts = weir_control::demo::cluster::Options {
                    keep,
                    seconds,
                    round_trips: usize::try_from(round_trips).unwrap_or(usize::MAX),
                    without_policy,
                };
                weir_control::demo::cluster::run(&opts, weir_workers::signals::flag())
            };
            match run() {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("weir demo: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Status { port } => match weir_control::demo::status::render(port) {
            Ok((text, ready)) => {
                print!("{text}");
                if ready {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("weir status: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Services { port, json } => match services(port, json) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("weir services: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Probe { command } => probe(command),
        Command::Agent { config } => {
            let run = || -> Result<(), String> {
                let config =
                    weir_control::agent::AgentConfig::load(&config).map_err(|e| e.to_string())?;
                weir_workers::signals::install()
                    .map_err(|e| format!("installing signal handlers: {e}"))?;
                weir_control::agent::run(&config, weir_workers::signals::flag())
                    .map_err(|e| e.to_string())
            };
            match run() {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("weir agent: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Crds { out, check } => match crds(out.as_deref(), check.as_deref()) {
            Ok(message) => {
                println!("{message}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("weir crds: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Policy {
            command:
                PolicyCommand::Eval {
                    files,
                    probes,
                    family,
                },
        } => match policy_eval(&files, &probes, &family) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(lines) => {
                for line in lines {
                    eprintln!("weir policy eval: {line}");
                }
                ExitCode::FAILURE
            }
        },
    }
}

fn probe(command: ProbeCommand) -> ExitCode {
    use std::time::Duration;
    use weir_control::demo::probe;
    let exit = |ok: bool| {
        if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    };
    match command {
        ProbeCommand::Serve { port, seconds } => {
            match probe::serve(port, Duration::from_secs(seconds)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("weir probe serve: {e}");
                    ExitCode::from(2)
                }
            }
        }
        ProbeCommand::Tcp { to, timeout_ms } => {
            exit(probe::tcp(to, Duration::from_millis(timeout_ms)))
        }
        ProbeCommand::Udp { to, timeout_ms } => {
            exit(probe::udp(to, Duration::from_millis(timeout_ms)))
        }
        ProbeCommand::Rtt {
            to,
            count,
            timeout_ms,
        } => {
            let rtts: Vec<Option<f64>> =
                probe::udp_rtts(to, count, Duration::from_millis(timeout_ms))
                    .into_iter()
                    .map(|d| d.map(|d| d.as_secs_f64() * 1e6))
                    .collect();
            println!("{}", serde_json::Value::from(rtts));
            ExitCode::SUCCESS
        }
        ProbeCommand::Http { port, path } => {
            match probe::http_get(port, &path, Duration::from_secs(2)) {
                Ok((status, body)) => {
                    print!("{body}");
                    exit(status == 200)
                }
                Err(e) => {
                    eprintln!("weir probe http: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

/// The agent's `/services`, as a table or as the JSON it is.
fn services(port: u16, json: bool) -> Result<String, String> {
    let (status, body) =
        weir_control::demo::probe::http_get(port, "/services", std::time::Duration::from_secs(2))
            .map_err(|e| format!("no agent answers on 127.0.0.1:{port}: {e}"))?;
    if status != 200 {
        return Err(format!("/services answered {status}: {}", body.trim()));
    }
    if json {
        return Ok(body);
    }
    let view: weir_control::services::view::ServicesView =
        serde_json::from_str(&body).map_err(|e| format!("/services: {e}"))?;
    Ok(weir_control::services::view::render(&view))
}

fn read(path: &Path) -> Result<String, Vec<String>> {
    std::fs::read_to_string(path).map_err(|e| vec![format!("{}: {e}", path.display())])
}

fn policy_eval(files: &[PathBuf], probes: &Path, family: &str) -> Result<String, Vec<String>> {
    use weir_control::policy::{eval, load::Cluster, model::IpFamily};
    let mut texts = Vec::new();
    for f in files {
        texts.push((f.display().to_string(), read(f)?));
    }
    let cluster = Cluster::from_sources(texts.iter().map(|(n, t)| (n.as_str(), t.as_str())))
        .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    let probes_name = probes.display().to_string();
    let list = eval::parse_probes(&read(probes)?, &probes_name).map_err(|e| vec![e])?;
    let family = if family == "IPv6" {
        IpFamily::V6
    } else {
        IpFamily::V4
    };
    let report =
        eval::evaluate(&cluster, &list, family, &probes_name).map_err(|e| vec![e.to_string()])?;
    serde_json::to_string_pretty(&report).map_err(|e| vec![e.to_string()])
}

fn crds(out: Option<&Path>, check: Option<&Path>) -> Result<String, String> {
    use weir_control::crd;
    match (out, check) {
        (_, Some(dir)) => {
            let drift = crd::check(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            if drift.is_empty() {
                Ok(format!("{}: up to date", dir.display()))
            } else {
                Err(format!("{}: {drift}", dir.display()))
            }
        }
        (Some(dir), None) => {
            let written = crd::write(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            Ok(format!(
                "wrote {} files to {}",
                written.len(),
                dir.display()
            ))
        }
        // clap requires one of the two.
        (None, None) => Err("give --out DIR or --check DIR".to_owned()),
    }
}
