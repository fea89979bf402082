//! The routes and lookup addresses the LPM benchmark measures on.
//!
//! They are generated here, deterministically, rather than by `dpdk-test-fib`, so that
//! weir, the naive trie and DPDK look up exactly the same addresses in exactly the same
//! prefixes: DPDK reads them from files written from these (see `fib`). The IPv4 routes
//! follow `dpdk-test-fib`'s own depth distribution, so its figures are the ones it reports
//! on its usual input.

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::rng::SplitMix64;

/// Routes with `dpdk-test-fib`'s default depth distribution (`-d 0:0`): for each length
/// 1..=32 in turn, an equal share of the routes not yet placed, capped at the 2^len
/// prefixes of that length, spread evenly over the address space. Next hops are 21-bit,
/// as `dpdk-test-fib` draws them. Sorted by length, then address.
pub fn v4_routes(routes: usize, seed: u64) -> Vec<(Ipv4Addr, u8, u32)> {
    let mut rng = SplitMix64(seed);
    let mut out = Vec::with_capacity(routes);
    for (depth, &count) in dpdk_depth_counts(routes, 32).iter().enumerate().skip(1) {
        let step = (1u64 << depth) as f64 / count as f64;
        let mut edge = 0.0f64;
        for _ in 0..count {
            let (lo, hi) = (edge as u64, (edge + step) as u64);
            let prefix = if hi > lo {
                lo + rng.next_u64() % (hi - lo)
            } else {
                lo
            };
            let addr = (prefix << (32 - depth)) as u32;
            out.push((
                Ipv4Addr::from(addr),
                depth as u8,
                (rng.next_u64() & NEXT_HOP_MASK) as u32,
            ));
            edge += step;
        }
    }
    out
}

/// `count` lookup addresses (host order): address `i` lies under route `i mod routes.len()`
/// with random host bits.
///
/// # Panics
/// If `routes` is empty.
pub fn v4_lookups(routes: &[(Ipv4Addr, u8, u32)], count: usize, seed: u64) -> Vec<u32> {
    assert!(!routes.is_empty(), "lookups need at least one route");
    let mut rng = SplitMix64(seed);
    (0..count)
        .map(|i| {
            let (prefix, len, _) = routes[i % routes.len()];
            let host = u32::MAX.checked_shr(u32::from(len)).unwrap_or(0);
            u32::from(prefix) | (rng.next_u64() as u32 & host)
        })
        .collect()
}

/// IPv6 routes shaped like a large cluster's table: 20% /48, 70% /64 (half of them inside
/// one of the /48s), 10% /128 (each inside one of the /64s), all under 2000::/3, no
/// duplicates, 21-bit next hops. Sorted by length.
pub fn v6_routes(routes: usize, seed: u64) -> Vec<(Ipv6Addr, u8, u32)> {
    let mut rng = SplitMix64(seed);
    let n48 = routes * 20 / 100;
    let n64 = routes * 70 / 100;
    let n128 = routes - n48 - n64;
    let global = |rng: &mut SplitMix64| (1u128 << 125) | (rng.next_u128() >> 3);
    let mut seen = HashSet::new();
    let mut out: Vec<(Ipv6Addr, u8, u32)> = Vec::with_capacity(routes);
    let mut add = |out: &mut Vec<_>, rng: &mut SplitMix64, addr: u128, len: u8| {
        let addr = addr & mask6(len);
        if seen.insert((addr, len)) {
            out.push((
                Ipv6Addr::from(addr),
                len,
                (rng.next_u64() & NEXT_HOP_MASK) as u32,
            ));
        }
    };
    while out.len() < n48 {
        let a = global(&mut rng);
        add(&mut out, &mut rng, a, 48);
    }
    while out.len() < n48 + n64 {
        let a = if n48 > 0 && rng.next_u64() & 1 == 0 {
            let parent = u128::from(out[(rng.next_u64() % n48 as u64) as usize].0);
            parent | (u128::from(rng.next_u64() as u16) << 64)
        } else {
            global(&mut rng)
        };
        add(&mut out, &mut rng, a, 64);
    }
    while out.len() < n48 + n64 + n128 {
        let a = if n64 > 0 {
            u128::from(out[n48 + (rng.next_u64() % n64 as u64) as usize].0)
                | u128::from(rng.next_u64())
        } else {
            global(&mut rng)
        };
        add(&mut out, &mut rng, a, 128);
    }
    out
}

/// `count` lookup addresses (host order): address `i` lies under route `i mod routes.len()`
/// with random host bits.
///
/// # Panics
/// If `routes` is empty.
pub fn v6_lookups(routes: &[(Ipv6Addr, u8, u32)], count: usize, seed: u64) -> Vec<u128> {
    assert!(!routes.is_empty(), "lookups need at least one route");
    let mut rng = SplitMix64(seed);
    (0..count)
        .map(|i| {
            let (prefix, len, _) = routes[i % routes.len()];
            u128::from(prefix) | (rng.next_u128() & !mask6(len))
        })
        .collect()
}

/// The number of routes per length 0..=`max_depth` that `dpdk-test-fib -n routes -d 0:0`
/// generates (`complete_distrib` in DPDK's `app/test-fib/main.c`).
pub fn dpdk_depth_counts(routes: usize, max_depth: u8) -> Vec<usize> {
    let mut counts = vec![0usize; usize::from(max_depth) + 1];
    let mut placed = 0usize;
    // Length 0 is configured (to zero routes); lengths 1.. are filled in turn, each with
    // an equal share of what is left for it and the lengths after it.
    for (depth, count) in counts.iter_mut().enumerate().skip(1) {
        let left = (routes - placed) / (usize::from(max_depth) + 1 - depth);
        *count = left.min(
            1usize
                .checked_shl(depth.min(63) as u32)
                .unwrap_or(usize::MAX),
        );
        placed += *count;
    }
    counts
}

/// `dpdk-test-fib` draws next hops below 2^21 (its limit for 4-byte entries and LPM6).
const NEXT_HOP_MASK: u64 = (1 << 21) - 1;

fn mask6(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use weir_dataplane::route::{Ipv4Lpm, Ipv6Lpm};

    use super::*;

    #[test]
    fn depth_counts_match_dpdk_test_fib() {
        // `dpdk-test-fib -n 100000 -d 0:0 -w routes.txt` writes exactly these per length.
        let c = dpdk_depth_counts(100_000, 32);
        assert_eq!(c[0], 0);
        assert_eq!(
            &c[1..=12],
            &[2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
        );
        assert_eq!(c[13], 4590);
        assert_eq!(c[24], 4591);
        assert_eq!(c[32], 4591);
        assert_eq!(c.iter().sum::<usize>(), 100_000);
        // And these for 2000 (the captured output in `fib`'s tests lists them).
        let c = dpdk_depth_counts(2000, 32);
        assert_eq!((c[6], c[7], c[30], c[31], c[32]), (64, 72, 72, 73, 73));
        assert_eq!(c.iter().sum::<usize>(), 2000);
    }

    #[test]
    fn generated_routes_are_valid_distinct_and_deterministic() {
        let r4 = v4_routes(20_000, 1);
        assert_eq!(r4.len(), 20_000);
        assert_eq!(r4, v4_routes(20_000, 1));
        assert!(Ipv4Lpm::build(&r4).is_ok());
        let r6 = v6_routes(10_000, 2);
        assert_eq!(r6.len(), 10_000);
        let lens = |l: u8| r6.iter().filter(|r| r.1 == l).count();
        assert_eq!((lens(48), lens(64), lens(128)), (2000, 7000, 1000));
        let lpm6 = Ipv6Lpm::build(&r6).unwrap();
        for a in v6_lookups(&r6, 1000, 3) {
            assert!(lpm6.lookup(a).is_some());
        }
    }
}
