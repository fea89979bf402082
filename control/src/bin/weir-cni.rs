//! `weir-cni`: the CNI plugin a container runtime executes (CNI spec 1.0/1.1). It answers
//! VERSION itself and hands ADD, DEL, CHECK, STATUS and GC to the node's weir agent (see
//! `weir_control::cni`). Results and errors go to stdout as the spec says; errors exit 1.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;
use weir_control::cni::{
    call, code, error_json, parse_args, result_json, Command, NetConf, Request, Response,
    DEFAULT_SOCKET, DEFAULT_TIMEOUT_SECS, SUPPORTED_VERSIONS,
};

fn fail(version: &str, code: u32, msg: &str, details: &str) -> ExitCode {
    println!("{}", error_json(version, code, msg, details));
    ExitCode::FAILURE
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}

fn main() -> ExitCode {
    let command = env("CNI_COMMAND");
    let mut stdin = String::new();
    if command != "VERSION" {
        if let Err(e) = std::io::stdin().read_to_string(&mut stdin) {
            return fail(
                "1.1.0",
                code::IO_FAILURE,
                "cannot read the network configuration",
                &e.to_string(),
            );
        }
    }
    if command == "VERSION" {
        println!(
            "{}",
            json!({"cniVersion": "1.1.0", "supportedVersions": SUPPORTED_VERSIONS})
        );
        return ExitCode::SUCCESS;
    }
    let conf: NetConf = match serde_json::from_str(&stdin) {
        Ok(c) => c,
        Err(e) => {
            return fail(
                "1.1.0",
                code::DECODE_FAILURE,
                "the network configuration is not valid JSON for weir-cni",
                &e.to_string(),
            )
        }
    };
    let version = conf.cni_version.clone();
    if !SUPPORTED_VERSIONS.contains(&version.as_str()) {
        return fail(
            "1.1.0",
            code::INCOMPATIBLE_VERSION,
            "incompatible CNI version",
            &format!("cniVersion {version} is not one of {SUPPORTED_VERSIONS:?}"),
        );
    }
    let command = match command.as_str() {
        "ADD" => Command::Add,
        "DEL" => Command::Del,
        "CHECK" => Command::Check,
        "STATUS" => Command::Status,
        "GC" => Command::Gc,
        other => {
            return fail(
                &version,
                code::INVALID_ENVIRONMENT,
                "unknown CNI_COMMAND",
                &format!("CNI_COMMAND={other:?}: expected ADD, DEL, CHECK, VERSION, STATUS or GC"),
            )
        }
    };
    let (container_id, netns, ifname) =
        (env("CNI_CONTAINERID"), env("CNI_NETNS"), env("CNI_IFNAME"));
    let needs_container = matches!(command, Command::Add | Command::Del | Command::Check);
    if needs_container && (container_id.is_empty() || ifname.is_empty()) {
        return fail(
            &version,
            code::INVALID_ENVIRONMENT,
            "missing CNI_CONTAINERID or CNI_IFNAME",
            "both are required for ADD, DEL and CHECK",
        );
    }
    if matches!(command, Command::Add | Command::Check) && netns.is_empty() {
        return fail(
            &version,
            code::INVALID_ENVIRONMENT,
            "missing CNI_NETNS",
            "ADD and CHECK need the container's network namespace",
        );
    }
    let args = parse_args(&env("CNI_ARGS"));
    let arg = |k: &str| {
        args.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
    };
    let request = Request {
        command,
        container_id,
        netns: netns.clone(),
        ifname: ifname.clone(),
        pod_namespace: arg("K8S_POD_NAMESPACE"),
        pod_name: arg("K8S_POD_NAME"),
        valid: conf.valid_attachments.clone().unwrap_or_default(),
    };
    let socket = conf
        .socket
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
    let timeout = Duration::from_secs(conf.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECS).max(1));
    match call(&socket, &request, timeout) {
        Response::Ok(Some(attached)) if command == Command::Add => {
            println!("{}", result_json(&version, &netns, &ifname, &attached));
            ExitCode::SUCCESS
        }
        Response::Ok(_) => ExitCode::SUCCESS,
        Response::Error { code, msg, details } => {
            let code = if command == Command::Status && code == code::TRY_AGAIN_LATER {
                code::NOT_AVAILABLE
            } else {
                code
            };
            fail(&version, code, &msg, &details)
        }
    }
}
