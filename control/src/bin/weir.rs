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
    /// Run the in-memory demo: a node with three pods, scripted frames through the real
    /// pipeline, expected versus seen. Exits non-zero if any frame misbehaves.
    Demo,
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
        Command::Demo => match weir_control::demo::run() {
            Ok((report, ok)) => {
                print!("{report}");
                if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("weir demo: {e}");
                ExitCode::FAILURE
            }
        },
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
