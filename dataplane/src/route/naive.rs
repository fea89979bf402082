//! One-bit-per-level binary tries: the obviously correct longest-prefix match.
//!
//! A lookup walks from the root one address bit at a time and remembers the last node that
//! held a value. Nothing is precomputed, so there is little to get wrong: the property tests
//! use these tries as the model for [`Ipv4Lpm`](super::Ipv4Lpm) and
//! [`Ipv6Lpm`](super::Ipv6Lpm), and the LPM benchmark reports them as the slow anchor.
//! Unlike the real tables they accept any value and any insertion order; a second insert of
//! the same prefix replaces its value.

use std::net::{Ipv4Addr, Ipv6Addr};

/// A binary trie over IPv4 prefixes.
#[derive(Debug, Clone, Default)]
pub struct NaiveTrie4 {
    trie: BitTrie,
}

impl NaiveTrie4 {
    /// An empty trie.
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `prefix/len` to `value`, replacing an earlier value for the same prefix. Host
    /// bits beyond `len` are ignored.
    ///
    /// # Panics
    /// If `len > 32`.
    pub fn insert(&mut self, prefix: Ipv4Addr, len: u8, value: u32) {
        assert!(len <= 32, "IPv4 prefix length {len} > 32");
        self.trie
            .insert(u128::from(u32::from(prefix)) << 96, len, value);
    }

    /// The value of the longest prefix covering `addr` (host byte order).
    pub fn lookup(&self, addr: u32) -> Option<u32> {
        self.trie.lookup(u128::from(addr) << 96, 32)
    }

    /// Number of distinct prefixes inserted.
    pub fn len(&self) -> usize {
        self.trie.prefixes
    }

    /// Whether no prefix was inserted.
    pub fn is_empty(&self) -> bool {
        self.trie.prefixes == 0
    }
}

/// A binary trie over IPv6 prefixes.
#[derive(Debug, Clone, Default)]
pub struct NaiveTrie6 {
    trie: BitTrie,
}

impl NaiveTrie6 {
    /// An empty trie.
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `prefix/len` to `value`, replacing an earlier value for the same prefix. Host
    /// bits beyond `len` are ignored.
    ///
    /// # Panics
    /// If `len > 128`.
    pub fn insert(&mut self, prefix: Ipv6Addr, len: u8, value: u32) {
        assert!(len <= 128, "IPv6 prefix length {len} > 128");
        self.trie.insert(u128::from(prefix), len, value);
    }

    /// The value of the longest prefix covering `addr` (host byte order).
    pub fn lookup(&self, addr: u128) -> Option<u32> {
        self.trie.lookup(addr, 128)
    }

    /// Number of distinct prefixes inserted.
    pub fn len(&self) -> usize {
        self.trie.prefixes
    }

    /// Whether no prefix was inserted.
    pub fn is_empty(&self) -> bool {
        self.trie.prefixes == 0
    }
}

/// Nodes in an arena; child index 0 means "no child" (the root is never anyone's child).
#[derive(Debug, Clone)]
struct BitTrie {
    nodes: Vec<Node>,
    prefixes: usize,
}

#[derive(Debug, Clone, Copy, Default)]
struct Node {
    child: [u32; 2],
    value: Option<u32>,
}

impl Default for BitTrie {
    fn default() -> Self {
        BitTrie {
            nodes: vec![Node::default()],
            prefixes: 0,
        }
    }
}

impl BitTrie {
    /// `key` is left-aligned: bit 127 is the first bit of the address.
    fn insert(&mut self, key: u128, len: u8, value: u32) {
        let mut node = 0usize;
        for depth in 0..u32::from(len) {
            let bit = ((key >> (127 - depth)) & 1) as usize;
            let next = self.nodes[node].child[bit];
            node = if next == 0 {
                let new = u32::try_from(self.nodes.len()).expect("trie under 2^32 nodes");
                self.nodes.push(Node::default());
                self.nodes[node].child[bit] = new;
                new as usize
            } else {
                next as usize
            };
        }
        if self.nodes[node].value.replace(value).is_none() {
            self.prefixes += 1;
        }
    }

    fn lookup(&self, key: u128, bits: u32) -> Option<u32> {
        let mut node = &self.nodes[0];
        let mut best = node.value;
        for depth in 0..bits {
            let next = node.child[((key >> (127 - depth)) & 1) as usize];
            if next == 0 {
                break;
            }
            node = &self.nodes[next as usize];
            best = node.value.or(best);
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins_whatever_the_insertion_order() {
        let mut t = NaiveTrie4::new();
        t.insert(Ipv4Addr::new(10, 1, 2, 0), 24, 3);
        t.insert(Ipv4Addr::new(10, 0, 0, 0), 8, 1);
        t.insert(Ipv4Addr::new(10, 1, 0, 0), 16, 2);
        assert_eq!(t.lookup(u32::from(Ipv4Addr::new(10, 1, 2, 3))), Some(3));
        assert_eq!(t.lookup(u32::from(Ipv4Addr::new(10, 1, 3, 3))), Some(2));
        assert_eq!(t.lookup(u32::from(Ipv4Addr::new(10, 2, 3, 3))), Some(1));
        assert_eq!(t.lookup(u32::from(Ipv4Addr::new(11, 0, 0, 0))), None);
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn default_route_host_route_and_replacement() {
        let mut t = NaiveTrie6::new();
        assert!(t.is_empty());
        let host: Ipv6Addr = "2001:db8::1".parse().unwrap();
        t.insert(Ipv6Addr::UNSPECIFIED, 0, 7);
        t.insert(host, 128, 8);
        t.insert(host, 128, 9);
        assert_eq!(t.len(), 2);
        assert_eq!(t.lookup(u128::from(host)), Some(9));
        assert_eq!(t.lookup(u128::from(host) + 1), Some(7));
    }
}
