//! What the calculator tells the service derivation between two calculations: which
//! Services may give other specs now, so that only those are derived again
//! ([`super::ServiceState::refresh`]), and the indexes that derivation needs without a pass
//! over the cluster (a Service's EndpointSlices, this node's pod addresses).
//!
//! A Service's specs depend on the Service, its EndpointSlices, and for a Service without
//! slices the pods of its namespace; whether an endpoint is local depends on this node's
//! pods' addresses; node ports on the node's addresses (the agent's, checked by
//! `refresh`). The calculator reports each change of those here as it applies it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use weir_dataplane::service::ServiceName;

use crate::policy::model::{EndpointSlice, Pod};

/// The Services touched since the last calculation, and the derivation's indexes.
#[derive(Debug, Default)]
pub struct ServiceIndex {
    /// Each Service's EndpointSlices (by slice name).
    slices: BTreeMap<ServiceName, BTreeSet<String>>,
    /// Addresses of this node's pods, with how many pods hold each (host-network pods share
    /// the node's).
    here: BTreeMap<IpAddr, u32>,
    /// What changed since [`ServiceIndex::take`].
    touched: Touched,
}

/// What changed since the last calculation.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Touched {
    /// Services (or their slices) changed.
    pub services: BTreeSet<ServiceName>,
    /// Namespaces whose pods changed: their Services without slices take their endpoints
    /// from the pods.
    pub pod_namespaces: BTreeSet<String>,
    /// Addresses that became or stopped being this node's pods': endpoints there changed
    /// locality.
    pub moved: BTreeSet<IpAddr>,
}

impl Touched {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty() && self.pod_namespaces.is_empty() && self.moved.is_empty()
    }
}

impl ServiceIndex {
    /// A Service was added, changed or deleted.
    pub fn service(&mut self, namespace: &str, name: &str) {
        self.touched
            .services
            .insert((namespace.to_owned(), name.to_owned()));
    }

    /// An EndpointSlice went from `old` to `new` (either absent: added or deleted).
    pub fn slice(&mut self, old: Option<&EndpointSlice>, new: Option<&EndpointSlice>) {
        if old == new {
            return;
        }
        if let Some(o) = old {
            if let Some(service) = &o.service {
                let key = (o.namespace.clone(), service.clone());
                if let Some(set) = self.slices.get_mut(&key) {
                    set.remove(&o.name);
                    if set.is_empty() {
                        self.slices.remove(&key);
                    }
                }
                self.touched.services.insert(key);
            }
        }
        if let Some(n) = new {
            if let Some(service) = &n.service {
                let key = (n.namespace.clone(), service.clone());
                self.slices
                    .entry(key.clone())
                    .or_default()
                    .insert(n.name.clone());
                self.touched.services.insert(key);
            }
        }
    }

    /// A pod went from `old` to `new`; `node` is this node.
    pub fn pod(&mut self, old: Option<&Pod>, new: Option<&Pod>, node: &str) {
        for p in old.iter().chain(new.iter()) {
            self.touched.pod_namespaces.insert(p.namespace.clone());
        }
        let here = |p: &Option<&Pod>| -> Vec<IpAddr> {
            p.filter(|p| super::pod_is_here(p, node))
                .map_or_else(Vec::new, |p| p.ips.clone())
        };
        let (was, is) = (here(&old), here(&new));
        if was == is {
            return;
        }
        for ip in &was {
            if let Some(n) = self.here.get_mut(ip) {
                *n -= 1;
                if *n == 0 {
                    self.here.remove(ip);
                }
            }
        }
        for ip in &is {
            *self.here.entry(*ip).or_default() += 1;
        }
        self.touched
            .moved
            .extend(was.iter().chain(is.iter()).copied());
    }

    /// The slices of Service `name`, by slice name.
    pub fn slices_of(&self, name: &ServiceName) -> impl Iterator<Item = &String> {
        self.slices.get(name).into_iter().flatten()
    }

    /// Whether `addr` is one of this node's pods' addresses.
    pub fn is_here(&self, addr: &IpAddr) -> bool {
        self.here.contains_key(addr)
    }

    /// What changed since the last call.
    pub fn take(&mut self) -> Touched {
        std::mem::take(&mut self.touched)
    }
}
