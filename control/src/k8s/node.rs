//! This node's own Node object: the agent publishes its WireGuard public key there (the
//! annotation the other nodes read), with a merge patch of that one annotation, which the
//! ClusterRole allows (`nodes: patch`).

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::Client;

use crate::wireguard::PUBLIC_KEY_ANNOTATION;

/// Sets `weir.dev/wireguard-public-key` on Node `name` to `public` unless it already holds
/// it: whether a patch was made. Fails, naming the node, when the node does not exist or the
/// API server refuses.
pub async fn publish_key(client: Client, name: &str, public: &str) -> Result<bool, String> {
    let nodes: Api<Node> = Api::all(client);
    let node = nodes
        .get(name)
        .await
        .map_err(|e| format!("reading Node {name}: {e}"))?;
    let current = node
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PUBLIC_KEY_ANNOTATION));
    if current.map(String::as_str) == Some(public) {
        return Ok(false);
    }
    let patch = serde_json::json!({
        "metadata": {"annotations": {PUBLIC_KEY_ANNOTATION: public}}
    });
    nodes
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| format!("annotating Node {name} with its WireGuard key: {e}"))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use weir_testkit::fake_api::FakeApi;

    #[tokio::test]
    async fn the_key_is_patched_once_and_a_missing_node_is_an_error() {
        let fake = FakeApi::new();
        fake.apply(json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "n1", "annotations": {"other": "kept"}}}))
            .unwrap();
        assert!(publish_key(fake.client(), "n1", "KEY=").await.unwrap());
        let node = fake.get("v1", "Node", None, "n1").unwrap();
        assert_eq!(
            node["metadata"]["annotations"][PUBLIC_KEY_ANNOTATION],
            "KEY="
        );
        assert_eq!(node["metadata"]["annotations"]["other"], "kept");
        let patches = fake.verb_count("patch", "/api/v1/nodes");
        assert!(!publish_key(fake.client(), "n1", "KEY=").await.unwrap());
        assert_eq!(
            fake.verb_count("patch", "/api/v1/nodes"),
            patches,
            "no patch when already there"
        );
        assert!(publish_key(fake.client(), "n1", "NEW=").await.unwrap());
        let err = publish_key(fake.client(), "n2", "KEY=").await.unwrap_err();
        assert!(err.contains("Node n2"), "{err}");
    }
}
