//! IPAM's state in the Kubernetes API: one `IPAMBlock` object per claimed block.
//!
//! - **Claim**: create the block's object. The API server refuses a second creation
//!   (409 AlreadyExists), so two nodes never hold one block.
//! - **Leases**: a node changes only its own blocks. Each save reads the object and
//!   replaces it with the read resourceVersion; if another write came in between (409
//!   Conflict), it reads again and retries, a few times, then reports the conflict.
//!
//! The allocator is synchronous (it runs under the attacher's lock), so the calls are
//! made on a small runtime of the store's own.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use kube::Client;

use crate::crd::{IpamBlock, IpamBlockSpec, IpamLeaseSpec};
use crate::ipam::{IpamError, Lease, Store};

/// Attempts of one save before a conflict is reported.
const ATTEMPTS: usize = 5;

/// IPAM's store in `IPAMBlock` objects. See the module doc.
pub struct KubeStore {
    runtime: tokio::runtime::Runtime,
    api: Api<IpamBlock>,
}

impl std::fmt::Debug for KubeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeStore").finish_non_exhaustive()
    }
}

fn api_err(what: &str, e: impl std::fmt::Display) -> IpamError {
    IpamError::Io {
        path: format!("IPAMBlock {what}"),
        why: e.to_string(),
    }
}

/// The object name of a block: its CIDR with `.`, `:` and `/` as `-`.
pub fn block_name(block: &IpNet) -> String {
    block.to_string().replace(['.', ':', '/'], "-")
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

impl KubeStore {
    /// A store using the client `make` builds on the store's runtime (kube clients must be
    /// made inside a runtime).
    pub fn new<F, Fut>(make: F) -> Result<KubeStore, IpamError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Client, String>>,
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| api_err("runtime", e))?;
        let client = runtime.block_on(make()).map_err(|e| api_err("client", e))?;
        Ok(KubeStore {
            api: Api::all(client),
            runtime,
        })
    }
}

impl Store for KubeStore {
    fn load(
        &mut self,
        node: &str,
    ) -> Result<(BTreeMap<IpNet, String>, BTreeMap<IpAddr, Lease>), IpamError> {
        let list = self
            .runtime
            .block_on(self.api.list(&ListParams::default()))
            .map_err(|e| api_err("list", e))?;
        let mut blocks = BTreeMap::new();
        let mut leases = BTreeMap::new();
        for object in list.items.into_iter().filter(|b| b.spec.node == node) {
            let Ok(block) = object.spec.cidr.parse::<IpNet>() else {
                continue;
            };
            for (ip, lease) in &object.spec.leases {
                if let Ok(ip) = ip.parse::<IpAddr>() {
                    leases.insert(
                        ip,
                        Lease {
                            container_id: lease.container_id.clone(),
                            ifname: lease.ifname.clone(),
                            pod: lease.pod.clone(),
                            pool: object.spec.pool.clone(),
                        },
                    );
                }
            }
            blocks.insert(block, object.spec.pool);
        }
        Ok((blocks, leases))
    }

    fn claim(&mut self, node: &str, pool: &str, block: &IpNet) -> Result<bool, IpamError> {
        let object = IpamBlock {
            metadata: ObjectMeta {
                name: Some(block_name(block)),
                ..ObjectMeta::default()
            },
            spec: IpamBlockSpec {
                cidr: block.to_string(),
                pool: pool.to_owned(),
                node: node.to_owned(),
                leases: BTreeMap::new(),
            },
        };
        match self
            .runtime
            .block_on(self.api.create(&PostParams::default(), &object))
        {
            Ok(_) => Ok(true),
            Err(e) if is_status(&e, 409) => Ok(false),
            Err(e) => Err(api_err(&format!("{block}: create"), e)),
        }
    }

    fn save(
        &mut self,
        node: &str,
        _blocks: &BTreeMap<IpNet, String>,
        leases: &BTreeMap<IpAddr, Lease>,
        changed: &[IpNet],
    ) -> Result<(), IpamError> {
        for block in changed {
            let name = block_name(block);
            let wanted: BTreeMap<String, IpamLeaseSpec> = leases
                .iter()
                .filter(|(ip, _)| block.contains(*ip))
                .map(|(ip, l)| {
                    (
                        ip.to_string(),
                        IpamLeaseSpec {
                            container_id: l.container_id.clone(),
                            ifname: l.ifname.clone(),
                            pod: l.pod.clone(),
                        },
                    )
                })
                .collect();
            let mut attempt = 0;
            loop {
                attempt += 1;
                let mut object = self
                    .runtime
                    .block_on(self.api.get(&name))
                    .map_err(|e| api_err(&format!("{name}: get"), e))?;
                if object.spec.node != node {
                    return Err(api_err(
                        &name,
                        format!(
                            "held by node {}, not {node}: refusing to write its leases",
                            object.spec.node
                        ),
                    ));
                }
                object.spec.leases = wanted.clone();
                // The read resourceVersion stays in the object: a write in between makes
                // the replace fail with 409 instead of overwriting it.
                match self.runtime.block_on(self.api.replace(
                    &name,
                    &PostParams::default(),
                    &object,
                )) {
                    Ok(_) => break,
                    Err(e) if is_status(&e, 409) && attempt < ATTEMPTS => continue,
                    Err(e) => return Err(api_err(&format!("{name}: replace"), e)),
                }
            }
        }
        Ok(())
    }
}
