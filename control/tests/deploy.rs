//! The manifests in `deploy/` agree with the code: the ConfigMap's agent configuration is
//! one the agent reads (unknown keys are errors), its conflist is CNI JSON with weir-cni
//! first, and the kustomization lists files that exist. (The manifests' Kubernetes schemas
//! are checked by `kubernetes-validate --strict` in the test command.)

use std::path::Path;

use weir_control::agent::AgentConfig;

fn deploy() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy"))
}

#[test]
fn the_configmap_holds_an_agent_config_and_a_conflist_weir_reads() {
    let text = std::fs::read_to_string(deploy().join("configmap.yaml")).unwrap();
    let cm: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let agent = cm["data"]["agent.yaml"].as_str().expect("data.agent.yaml");
    let config: AgentConfig = serde_yaml::from_str(agent).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.kubernetes.is_some() && config.datastore.is_none());
    assert!(config.node.is_empty(), "the node comes from NODE_NAME");
    assert!(config.cni.is_some());
    assert_eq!(
        config.node_port_range,
        [30000, 32767],
        "kube-apiserver's default --service-node-port-range"
    );
    // One ConfigMap for every node: WireGuard takes each node's address from its Node.
    let wg = config
        .wireguard
        .as_ref()
        .expect("encryption is on by default");
    assert!(
        wg.address.is_none(),
        "a per-node address in a shared ConfigMap"
    );
    assert!(
        wg.key_file.starts_with("/var/lib/weir"),
        "the key survives restarts"
    );
    let conflist: serde_json::Value =
        serde_json::from_str(cm["data"]["10-weir.conflist"].as_str().unwrap()).unwrap();
    assert_eq!(conflist["plugins"][0]["type"], "weir-cni");
    let socket = conflist["plugins"][0]["socket"].as_str().unwrap();
    assert_eq!(
        Path::new(socket),
        config.cni.as_ref().unwrap().socket.as_path(),
        "plugin and agent agree on the socket"
    );
}

#[test]
fn the_kustomization_lists_files_that_exist() {
    let text = std::fs::read_to_string(deploy().join("kustomization.yaml")).unwrap();
    let k: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let resources = k["resources"].as_sequence().expect("resources");
    assert!(resources.len() >= 5);
    for r in resources {
        let path = deploy().join(r.as_str().unwrap());
        assert!(path.exists(), "{} is listed but missing", path.display());
    }
    let crds = std::fs::read_to_string(deploy().join("crds/kustomization.yaml")).unwrap();
    assert!(crds.contains("ipamblocks.weir.dev.yaml"));
    // Every generated CRD is installed by the top-level kustomization (it lists them file
    // by file, for older kubectl releases).
    let listed: Vec<&str> = resources.iter().filter_map(|r| r.as_str()).collect();
    for entry in std::fs::read_dir(deploy().join("crds")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".weir.dev.yaml") {
            let want = format!("crds/{name}");
            assert!(listed.contains(&want.as_str()), "{want} is not listed");
        }
    }
}

#[test]
fn the_daemonset_runs_guaranteed_with_hugepages_and_probes() {
    let text = std::fs::read_to_string(deploy().join("daemonset.yaml")).unwrap();
    let ds: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(spec["hostNetwork"], true);
    let agent = &spec["containers"][0];
    let res = &agent["resources"];
    assert_eq!(
        res["requests"], res["limits"],
        "Guaranteed QoS: requests equal limits"
    );
    assert!(res["limits"]["hugepages-2Mi"].is_string());
    assert_eq!(agent["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(agent["livenessProbe"]["httpGet"]["path"], "/healthz");
    let caps = agent["securityContext"]["capabilities"]["add"]
        .as_sequence()
        .unwrap();
    assert!(!caps.iter().any(|c| c == "ALL" || c == "SYS_MODULE"));
    assert_eq!(agent["securityContext"]["capabilities"]["drop"][0], "ALL");
}
