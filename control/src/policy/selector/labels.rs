//! [`Labels`]: a label set as a vector of pairs sorted by key.
//!
//! Objects carry a few labels each (two to ten), and an agent holds every pod of the
//! cluster: a `BTreeMap` allocates a whole node for its first entry (eleven keys and
//! eleven values, about 540 bytes for `String` pairs), which was the largest part of a
//! pod's model at 150 000 pods. A sorted vector holds the same pairs in a single
//! allocation sized to them, looks a key up by binary search over a handful of entries,
//! and iterates in the same (key) order, so it keeps `BTreeMap`'s behaviour where
//! selectors, hashes and comparisons depend on it.

use std::borrow::Borrow;
use std::fmt;

/// A label set: key to value, as on a Kubernetes object's `metadata.labels`, in key order.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(Vec<(String, String)>);

/// Iterates over a [`Labels`] by reference, in key order.
pub type Iter<'a> = std::iter::Map<
    std::slice::Iter<'a, (String, String)>,
    fn(&'a (String, String)) -> (&'a String, &'a String),
>;

impl Labels {
    /// An empty set (allocates nothing).
    pub fn new() -> Self {
        Labels(Vec::new())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// `key`'s value.
    pub fn get<Q>(&self, key: &Q) -> Option<&String>
    where
        String: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.find(key).ok().map(|i| &self.0[i].1)
    }

    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        String: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.find(key).is_ok()
    }

    /// Sets `key` to `value`; returns the value it replaced.
    pub fn insert(&mut self, key: String, value: String) -> Option<String> {
        match self.find(key.as_str()) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, value)),
            Err(i) => {
                self.0.insert(i, (key, value));
                None
            }
        }
    }

    /// Removes `key`; returns its value.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<String>
    where
        String: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.find(key).ok().map(|i| self.0.remove(i).1)
    }

    /// The pairs in key order.
    pub fn iter(&self) -> Iter<'_> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.iter().map(|(k, _)| k)
    }

    fn find<Q>(&self, key: &Q) -> Result<usize, usize>
    where
        String: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.0.binary_search_by(|(k, _)| k.borrow().cmp(key))
    }
}

/// `labels["key"]`, as for a `BTreeMap`.
///
/// # Panics
/// If `key` is absent.
impl<Q> std::ops::Index<&Q> for Labels
where
    String: Borrow<Q>,
    Q: Ord + ?Sized,
{
    type Output = String;

    fn index(&self, key: &Q) -> &String {
        self.get(key).expect("no such label")
    }
}

impl fmt::Debug for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// As a `BTreeMap` collects: a key given twice keeps its last value.
impl FromIterator<(String, String)> for Labels {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        let mut pairs: Vec<(String, String)> = iter.into_iter().collect();
        // Stable: of equal keys, the last given stays last, and is the one kept.
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out: Vec<(String, String)> = Vec::with_capacity(pairs.len());
        for pair in pairs {
            match out.last_mut() {
                Some(last) if last.0 == pair.0 => *last = pair,
                _ => out.push(pair),
            }
        }
        out.shrink_to_fit();
        Labels(out)
    }
}

impl<const N: usize> From<[(String, String); N]> for Labels {
    fn from(pairs: [(String, String); N]) -> Self {
        pairs.into_iter().collect()
    }
}

impl<'a> IntoIterator for &'a Labels {
    type Item = (&'a String, &'a String);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl IntoIterator for Labels {
    type Item = (String, String);
    type IntoIter = std::vec::IntoIter<(String, String)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u8),
        Remove(u8),
        Clear,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..12u8, any::<u8>()).prop_map(|(k, v)| Op::Insert(k, v)),
            2 => (0..12u8).prop_map(Op::Remove),
            1 => Just(Op::Clear),
        ]
    }

    proptest! {
        #[test]
        fn behaves_as_a_btree_map(
            start in prop::collection::vec((0..12u8, any::<u8>()), 0..10),
            ops in prop::collection::vec(op(), 0..40),
        ) {
            let pair = |k: u8, v: u8| (format!("k{k}"), format!("v{v}"));
            let mut labels: Labels = start.iter().map(|&(k, v)| pair(k, v)).collect();
            let mut model: BTreeMap<String, String> = start.iter().map(|&(k, v)| pair(k, v)).collect();
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        let (k, v) = pair(k, v);
                        prop_assert_eq!(labels.insert(k.clone(), v.clone()), model.insert(k, v));
                    }
                    Op::Remove(k) => {
                        let k = format!("k{k}");
                        prop_assert_eq!(labels.remove(&k), model.remove(&k));
                    }
                    Op::Clear => {
                        labels.clear();
                        model.clear();
                    }
                }
                prop_assert!(labels.iter().eq(model.iter()));
                prop_assert_eq!(labels.len(), model.len());
                for k in 0..12u8 {
                    let k = format!("k{k}");
                    prop_assert_eq!(labels.get(k.as_str()), model.get(&k));
                    prop_assert_eq!(labels.contains_key(&k), model.contains_key(&k));
                }
                prop_assert_eq!(format!("{labels:?}"), format!("{model:?}"));
            }
        }
    }

    #[test]
    fn a_key_given_twice_keeps_its_last_value() {
        let labels = Labels::from([
            ("b".to_owned(), "1".to_owned()),
            ("a".to_owned(), "2".to_owned()),
            ("b".to_owned(), "3".to_owned()),
        ]);
        assert_eq!(format!("{labels:?}"), r#"{"a": "2", "b": "3"}"#);
    }
}
