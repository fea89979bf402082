use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::route::naive::NaiveTrie4;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn set(routes: &[(&str, u8, u32)]) -> Ipv4Routes {
    let v: Vec<_> = routes.iter().map(|&(a, l, v)| (ip(a), l, v)).collect();
    Ipv4Routes::new(&v).unwrap()
}

/// Every address a route set could answer differently for: each prefix's first and last
/// address and their neighbours, plus `extra`.
fn probes(sets: &[&Ipv4Routes], extra: &[u32]) -> Vec<u32> {
    let mut addrs = extra.to_vec();
    for s in sets {
        for (p, len, _) in s.iter() {
            let host = u32::MAX.checked_shr(u32::from(len)).unwrap_or(0);
            let p = u32::from(p);
            addrs.extend([p, p | host, p.wrapping_sub(1), (p | host).wrapping_add(1)]);
        }
    }
    addrs
}

fn assert_same(updated: &Ipv4Lpm, routes: &Ipv4Routes, addrs: &[u32]) {
    let fresh = Ipv4Lpm::from_routes(routes, 1 << 10).unwrap();
    assert_eq!(updated.len(), routes.len());
    assert_eq!(updated.tbl8_groups(), fresh.tbl8_groups());
    for &a in addrs {
        assert_eq!(updated.lookup(a), fresh.lookup(a), "{}", Ipv4Addr::from(a));
    }
}

#[test]
fn a_pod_route_comes_and_goes_in_its_group() {
    let block = set(&[("198.18.0.0", 15, 1), ("198.18.4.0", 26, 2)]);
    let mut t = Ipv4Lpm::from_routes(&block, 16).unwrap();
    assert_eq!(t.tbl8_groups(), 1);
    let with_pod = set(&[
        ("198.18.0.0", 15, 1),
        ("198.18.4.0", 26, 2),
        ("198.18.4.7", 32, 3),
    ]);
    assert_eq!(t.update(&block, &with_pod).unwrap(), 1);
    assert_eq!(t.tbl8_groups(), 1, "the /32 shares the /26's group");
    assert_eq!(t.lookup(u32::from(ip("198.18.4.7"))), Some(3));
    assert_eq!(t.lookup(u32::from(ip("198.18.4.8"))), Some(2));
    assert_eq!(t.lookup(u32::from(ip("198.18.4.64"))), Some(1));
    assert_eq!(t.update(&with_pod, &block).unwrap(), 1);
    assert_eq!(t.lookup(u32::from(ip("198.18.4.7"))), Some(2));
    assert_eq!(t.update(&block, &block).unwrap(), 0);
}

#[test]
fn a_freed_group_is_reused_and_the_slot_falls_back_to_its_leaf() {
    let base = set(&[("198.18.0.0", 16, 1)]);
    let one = set(&[("198.18.0.0", 16, 1), ("198.18.1.1", 32, 2)]);
    let other = set(&[("198.18.0.0", 16, 1), ("198.18.2.1", 32, 3)]);
    let mut t = Ipv4Lpm::from_routes(&base, 4).unwrap();
    t.update(&base, &one).unwrap();
    assert_eq!(t.tbl8_groups(), 1);
    let before = t.tbl8.len();
    t.update(&one, &other).unwrap();
    assert_eq!(t.tbl8_groups(), 1);
    assert_eq!(t.tbl8.len(), before, "the freed group was reused");
    assert_eq!(t.lookup(u32::from(ip("198.18.1.1"))), Some(1));
    assert_eq!(t.lookup(u32::from(ip("198.18.2.1"))), Some(3));
    t.update(&other, &base).unwrap();
    assert_eq!(t.tbl8_groups(), 0);
    assert_eq!(t.lookup(u32::from(ip("198.18.2.1"))), Some(1));
}

#[test]
fn a_changed_short_prefix_refills_the_groups_under_it() {
    let a = set(&[("198.18.0.0", 15, 1), ("198.18.9.9", 32, 2)]);
    let b = set(&[("198.18.0.0", 15, 5), ("198.18.9.9", 32, 2)]);
    let mut t = Ipv4Lpm::from_routes(&a, 4).unwrap();
    t.update(&a, &b).unwrap();
    assert_eq!(t.lookup(u32::from(ip("198.18.9.8"))), Some(5));
    assert_eq!(t.lookup(u32::from(ip("198.18.9.9"))), Some(2));
    assert_eq!(t.lookup(u32::from(ip("198.19.255.255"))), Some(5));
    let none = set(&[("198.18.9.9", 32, 2)]);
    t.update(&b, &none).unwrap();
    assert_eq!(t.lookup(u32::from(ip("198.18.9.8"))), None);
    assert_eq!(t.lookup(u32::from(ip("198.18.9.9"))), Some(2));
    assert_eq!(t.lookup(u32::from(ip("198.19.0.0"))), None);
}

#[test]
fn a_default_route_added_and_removed_keeps_the_groups() {
    let pods = set(&[("198.18.0.0", 26, 1), ("198.18.0.9", 32, 2)]);
    let with_default = set(&[
        ("0.0.0.0", 0, 7),
        ("198.18.0.0", 26, 1),
        ("198.18.0.9", 32, 2),
    ]);
    let mut t = Ipv4Lpm::from_routes(&pods, 4).unwrap();
    t.update(&pods, &with_default).unwrap();
    let addrs = probes(&[&pods, &with_default], &[0, u32::MAX, 0xc612_0040]);
    assert_same(&t, &with_default, &addrs);
    assert_eq!(t.lookup(0xc612_0040), Some(7));
    t.update(&with_default, &pods).unwrap();
    assert_same(&t, &pods, &addrs);
    assert_eq!(t.lookup(0xc612_0040), None);
}

#[test]
fn too_many_groups_is_refused_and_the_table_is_unchanged() {
    let one = set(&[("198.18.1.1", 32, 1)]);
    let three = set(&[
        ("198.18.1.1", 32, 1),
        ("198.18.2.1", 32, 2),
        ("198.18.3.1", 32, 3),
    ]);
    let mut t = Ipv4Lpm::from_routes(&one, 2).unwrap();
    let err = t.update(&one, &three).unwrap_err();
    assert_eq!(err, LpmError::Tbl8Exhausted { max: 2 });
    assert_same(&t, &one, &probes(&[&one, &three], &[]));
}

/// A route set over a small space (so that prefixes nest and share /24s) as a map.
fn route_map() -> impl Strategy<Value = BTreeMap<(u32, u8), u32>> {
    // From /12: the range a short prefix repaints stays small (a /0 repaints 2^24
    // entries, which unoptimised test builds take a second over).
    let len = prop_oneof![
        Just(12u8),
        Just(16),
        Just(24),
        Just(25),
        Just(32),
        12u8..=32,
    ];
    let addr = (0u32..2, 0u32..3, 0u32..3, any::<u8>())
        .prop_map(|(a, b, c, d)| 0xc612_0000 | (a << 16) | (b << 10) | (c << 8) | u32::from(d));
    prop::collection::btree_map((addr, len), 0u32..4, 0..24).prop_map(|m| {
        m.into_iter()
            .map(|((a, len), v)| ((a & mask(len), len), v))
            .collect()
    })
}

fn routes_of(m: &BTreeMap<(u32, u8), u32>) -> Ipv4Routes {
    let v: Vec<_> = m
        .iter()
        .map(|(&(a, l), &v)| (Ipv4Addr::from(a), l, v))
        .collect();
    Ipv4Routes::new(&v).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Random sequences of route sets: after every update, every probe answers as a table
    /// built from scratch, and as the naive trie, with the same number of groups.
    #[test]
    fn updates_match_a_table_built_from_scratch(
        steps in prop::collection::vec((route_map(), prop::collection::vec(any::<bool>(), 24)), 1..6),
        start in route_map(),
        random in prop::collection::vec(any::<u32>(), 16),
    ) {
        let mut current = start.clone();
        let mut held = routes_of(&current);
        let mut table = Ipv4Lpm::from_routes(&held, 1 << 10).unwrap();
        for (extra, keep) in steps {
            // Keep some of the current routes, change some values, add new ones.
            let mut next: BTreeMap<(u32, u8), u32> = current
                .iter()
                .zip(keep.iter().cycle())
                .filter(|(_, &k)| k)
                .map(|((&p, &v), _)| (p, v))
                .collect();
            for (p, v) in extra {
                next.insert(p, v);
            }
            let after = routes_of(&next);
            table.update(&held, &after).unwrap();
            let addrs = probes(&[&held, &after], &random);
            assert_same(&table, &after, &addrs);
            let mut model = NaiveTrie4::new();
            for (p, len, v) in after.iter() {
                model.insert(p, len, v);
            }
            for &a in &addrs {
                prop_assert_eq!(table.lookup(a), model.lookup(a));
            }
            held = after;
            current = next;
        }
    }
}

/// A 10 000-pod churn (a pod's /32 added or removed at a time, about a hundred alive, in
/// eight /24s under their node's /26 blocks), the two alternating copies a publisher
/// keeps: the groups in use never exceed the /24s holding long prefixes, the group
/// storage stops growing once every /24 had one, and the answers match a fresh build.
#[test]
fn a_ten_thousand_pod_churn_keeps_the_tables_memory_steady() {
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let blocks: Vec<(u32, u8, u32)> = (0..8u32)
        .map(|i| (0xc612_0000 | (i << 8), 26, 1000 + i))
        .collect();
    let mut alive: BTreeMap<u32, u32> = BTreeMap::new();
    let set = |alive: &BTreeMap<u32, u32>| {
        let v: Vec<(Ipv4Addr, u8, u32)> = blocks
            .iter()
            .map(|&(a, l, v)| (Ipv4Addr::from(a), l, v))
            .chain(alive.iter().map(|(&a, &v)| (Ipv4Addr::from(a), 32, v)))
            .collect();
        Ipv4Routes::new(&v).unwrap()
    };
    let first = set(&alive);
    let mut copies = [
        (Ipv4Lpm::from_routes(&first, 64).unwrap(), first.clone()),
        (Ipv4Lpm::from_routes(&first, 64).unwrap(), first),
    ];
    let mut storage_after_warmup = None;
    for event in 0..10_000u32 {
        let r = next();
        let addr = 0xc612_0000 | (((r >> 8) as u32 % 8) << 8) | (r as u32 % 64);
        if alive.len() < 100 || (r >> 40) % 2 == 0 {
            alive.insert(addr, event);
        } else if let Some(&gone) = alive.keys().nth((r >> 20) as usize % alive.len()) {
            alive.remove(&gone);
        }
        let after = set(&alive);
        let (table, held) = &mut copies[(event % 2) as usize];
        table.update(held, &after).unwrap();
        *held = after;
        assert!(table.tbl8_groups() <= 8, "{} groups", table.tbl8_groups());
        if event == 1_000 {
            storage_after_warmup = Some(table.tbl8.len());
        }
        if let Some(s) = storage_after_warmup {
            assert_eq!(table.tbl8.len(), s, "group storage grew at event {event}");
        }
    }
    for (table, held) in &copies {
        let addrs = probes(&[held], &[]);
        assert_same(table, held, &addrs);
    }
}
