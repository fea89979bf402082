//! The Internet checksum: full computation, incremental update, and completion of the
//! partial checksums that a kernel leaves for a device to finish.
//!
//! RFC 1071 §1 defines the checksum: "Adjacent octets to be checksummed are paired to form
//! 16-bit integers, and the 1's complement sum of these 16-bit integers is formed", and "To
//! generate a checksum, the checksum field itself is cleared, the 16-bit 1's complement sum
//! is computed over the octets concerned, and the 1's complement of this sum is placed in
//! the checksum field."
//!
//! Three properties from RFC 1071 §2 make it cheap:
//!
//! - **Byte-order independence and deferred carries** (§2(B), §2(C)): the sum can be taken
//!   over wider words and the carries folded back in at the end. [`sum`] adds 64-bit
//!   big-endian words with an end-around carry (2^64 ≡ 1 mod 2^16 − 1), so it touches each
//!   8 bytes once; [`fold`] brings the result back to 16 bits.
//! - **Incremental update** (§2(D), made exact by RFC 1624): changing one field needs only
//!   the old and new field values, see [`update16`] and [`update32`].
//! - **Associativity**: a pseudo-header sum ([`pseudo_header_v4`], [`pseudo_header_v6`]) is
//!   just an `initial` value passed to [`sum`].
//!
//! Values of type `u32` here are *partial sums*: congruent modulo 0xffff to the true
//! ones'-complement sum, not yet folded to 16 bits and not complemented. Values of type
//! `u16` are folded.
//!
//! [`complete_partial`] exists because a userspace dataplane sits where a NIC would: frames
//! a kernel transmits through a veth with tx checksum offload carry `CHECKSUM_PARTIAL` L4
//! checksums that the "device" is expected to finish (see its doc).
//!
//! Nothing here panics on any packet bytes; [`complete_partial`] reports a checksum field
//! that does not fit the segment as [`Malformed::Truncated`] (and panics only on an odd
//! `check_offset`, which no caller passes: see its `# Panics`).

use super::Malformed;

/// The ones'-complement partial sum of `data`, added to `initial` (RFC 1071 §1).
///
/// Bytes pair up as big-endian 16-bit words; an odd trailing byte is padded with a zero
/// byte on the right, as RFC 1071 §4.1 does (`sum += *(unsigned char *) addr`, on a
/// big-endian machine). The result is folded to 32 bits but not to 16 and not
/// complemented: pass it to [`fold`], or on to another `sum` as `initial`.
///
/// Eight bytes are added at a time (RFC 1071 §2(C), parallel summation on wider words),
/// with the carry out of bit 63 added back in.
///
/// Note that concatenation works only at even offsets: `sum(b, sum(a, 0))` equals
/// `sum(a ++ b, 0)` when `a.len()` is even.
#[inline]
pub fn sum(data: &[u8], initial: u32) -> u32 {
    let mut acc = u64::from(initial);
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        acc = add_end_around(acc, u64::from_be_bytes(word));
    }
    // The tail starts at a multiple of 8, so its 16-bit words keep their alignment; the
    // zero padding on the right turns an odd trailing byte into the high byte of a word.
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        acc = add_end_around(acc, u64::from_be_bytes(word));
    }
    fold64(acc)
}

/// Folds a partial sum to 16 bits by adding the carries back in (RFC 1071 §4.1: "Fold
/// 32-bit sum to 16 bits"). The result is *not* complemented.
///
/// A non-zero sum that is a multiple of 0xffff folds to 0xffff (ones'-complement "negative
/// zero"); only a sum of 0 folds to 0.
#[inline]
pub fn fold(sum: u32) -> u16 {
    let s = (sum >> 16) + (sum & 0xffff);
    let s = (s >> 16) + (s & 0xffff);
    s as u16
}

/// The Internet checksum of `data` (RFC 1071 §1): `!fold(sum(data, 0))`.
///
/// To generate a checksum, clear the field first. To verify one, sum over everything
/// including the field: `fold(sum(..)) == 0xffff` means it verifies.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(data, 0))
}

/// The partial sum of the IPv4 pseudo-header for TCP and UDP (RFC 793 §3.1, RFC 768):
/// source address, destination address, zero, protocol, and the L4 length (header plus
/// data).
///
/// Use it as the `initial` value of [`sum`] over the L4 segment.
#[inline]
pub fn pseudo_header_v4(src: [u8; 4], dst: [u8; 4], protocol: u8, l4_len: u16) -> u32 {
    let mut acc = u32::from(u16::from_be_bytes([src[0], src[1]]));
    acc += u32::from(u16::from_be_bytes([src[2], src[3]]));
    acc += u32::from(u16::from_be_bytes([dst[0], dst[1]]));
    acc += u32::from(u16::from_be_bytes([dst[2], dst[3]]));
    acc += u32::from(protocol);
    acc += u32::from(l4_len);
    acc
}

/// The partial sum of the IPv6 pseudo-header (RFC 8200 §8.1): source address, destination
/// address, the 32-bit upper-layer packet length, three zero bytes and the next header
/// value of the upper-layer protocol (not of an extension header).
///
/// With a Routing header, `dst` is the final destination (RFC 8200 §8.1: "If the IPv6
/// packet contains a Routing header, the Destination Address used in the pseudo-header is
/// that of the final destination").
#[inline]
pub fn pseudo_header_v6(src: &[u8; 16], dst: &[u8; 16], next_header: u8, l4_len: u32) -> u32 {
    let acc = sum(src, 0);
    let acc = sum(dst, u32::from(fold(acc)));
    let mut acc = u32::from(fold(acc));
    acc += l4_len >> 16;
    acc += l4_len & 0xffff;
    acc += u32::from(next_header);
    acc
}

/// The checksum after one 16-bit word it covers changed from `old` to `new`.
///
/// RFC 1624 §3, eqn. 3: `HC' = ~(~HC + ~m + m')`. Unlike RFC 1141's `HC' = HC + m - m'`
/// (RFC 1624 eqn. 2), it cannot turn a checksum that recomputation gives as 0x0000 into
/// 0xffff (the example of RFC 1624 §4), so the result equals a full recomputation over
/// the header with the field cleared. The one exception is data that becomes all zero,
/// which recomputation checksums as 0xffff and eqn. 3 as 0x0000; no real header or
/// pseudo-header is all zero.
#[inline]
pub fn update16(check: u16, old: u16, new: u16) -> u16 {
    let s = u32::from(!check) + u32::from(!old) + u32::from(new);
    !fold(s)
}

/// The checksum after one 32-bit, 16-bit aligned value it covers (an IPv4 address, a TCP
/// sequence number) changed from `old` to `new`: RFC 1624 eqn. 3 applied to both halves.
#[inline]
pub fn update32(check: u16, old: u32, new: u32) -> u16 {
    let s = u32::from(!check) + (!old >> 16) + (!old & 0xffff) + (new >> 16) + (new & 0xffff);
    !fold(s)
}

/// What [`complete_partial`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partial {
    /// The checksum field did not hold a partial checksum, or the checksum already
    /// verified: the segment was not touched.
    NotPartial,
    /// The field held the pseudo-header sum; the full checksum has been written.
    Completed,
}

/// Completes a `CHECKSUM_PARTIAL` L4 checksum in place.
///
/// Frames that a kernel stack sends through a veth with tx checksum offload on carry
/// `CHECKSUM_PARTIAL` L4 checksums: the field holds the folded, *not* complemented
/// pseudo-header sum (Linux: `th->check = ~tcp_v4_check(len, saddr, daddr, 0)`,
/// `udp4_hwcsum`, and the same for IPv6), and the device is expected to finish it. A
/// userspace dataplane receiving such a frame via AF_XDP must complete it before a
/// receiving kernel verifies it.
///
/// - `l4` is the whole L4 segment, header and payload: exactly the IP payload length.
/// - `check_offset` is the offset of the checksum field inside it: TCP 16, UDP 6, ICMPv6 2.
///   (SCTP uses CRC32c and is not handled here.)
/// - `pseudo` is the pseudo-header sum *including* the length
///   ([`pseudo_header_v4`], [`pseudo_header_v6`]). For ICMPv4, which has no pseudo-header,
///   pass 0.
///
/// The cheap test comes first: if the field is not `fold(pseudo)` (0x0000 and 0xffff, the
/// two ones'-complement zeros, count as equal), the answer is `NotPartial` and the payload
/// is not read. Otherwise the checksum is verified; a segment that already verifies is left
/// alone (`NotPartial`). Otherwise the checksum over the segment with the field cleared is
/// written (`Completed`). RFC 768: "If the computed checksum is zero, it is transmitted as
/// all ones", so with `is_udp` a computed 0x0000 is written as 0xffff.
///
/// Verification and completion share one pass over the segment: the sum with the field
/// cleared is the sum with it, minus the field (ones'-complement subtraction is addition of
/// the complement).
///
/// # Errors
///
/// [`Malformed::Truncated`] if the two-byte field at `check_offset` does not fit in `l4`.
///
/// # Panics
///
/// If `check_offset` is odd. Every L4 checksum field is 16-bit aligned, and one that is
/// not would enter the sum byte-swapped, which this function does not model.
pub fn complete_partial(
    l4: &mut [u8],
    check_offset: usize,
    pseudo: u32,
    is_udp: bool,
) -> Result<Partial, Malformed> {
    assert!(check_offset & 1 == 0, "odd checksum offset {check_offset}");
    let end = check_offset.checked_add(2).ok_or(Malformed::Truncated)?;
    let field = l4.get(check_offset..end).ok_or(Malformed::Truncated)?;
    let field = u16::from_be_bytes([field[0], field[1]]);
    let expected = fold(pseudo);
    if field != expected && !(is_ones_complement_zero(field) && is_ones_complement_zero(expected)) {
        return Ok(Partial::NotPartial);
    }
    let with_field = fold(sum(l4, pseudo));
    if with_field == 0xffff {
        return Ok(Partial::NotPartial);
    }
    let mut check = !fold(u32::from(with_field) + u32::from(!field));
    if is_udp && check == 0 {
        check = 0xffff;
    }
    l4[check_offset..end].copy_from_slice(&check.to_be_bytes());
    Ok(Partial::Completed)
}

#[inline]
fn add_end_around(acc: u64, word: u64) -> u64 {
    let (s, carry) = acc.overflowing_add(word);
    // With a carry out, s ≤ 2^64 − 2, so adding it back cannot overflow again.
    s + u64::from(carry)
}

#[inline]
fn fold64(acc: u64) -> u32 {
    let s = (acc >> 32) + (acc & 0xffff_ffff);
    let s = (s >> 32) + (s & 0xffff_ffff);
    s as u32
}

#[inline]
fn is_ones_complement_zero(v: u16) -> bool {
    v == 0 || v == 0xffff
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 1071 §1 in its plainest form: 16-bit words, a u32 accumulator, fold at the end.
    fn naive_checksum(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for pair in data.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            let lo = pair.get(1).map_or(0, |&b| u32::from(b));
            acc += hi | lo;
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }

    /// RFC 1071 §3 worked example: the bytes 00 01 f2 03 f4 f5 f6 f7 sum to 0xddf2.
    #[test]
    fn rfc1071_example() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data, 0)), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    /// A real IPv4 header (the well-known example from Wikipedia's "IPv4 header checksum"):
    /// 4500 0073 0000 4000 4011 b861 c0a8 0001 c0a8 00c7.
    #[test]
    fn ipv4_header_known_answer() {
        let mut hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(fold(sum(&hdr, 0)), 0xffff, "a correct header verifies");
        hdr[10] = 0;
        hdr[11] = 0;
        assert_eq!(checksum(&hdr), 0xb861);
    }

    #[test]
    fn odd_length_pads_on_the_right() {
        assert_eq!(fold(sum(&[0xab], 0)), 0xab00);
        assert_eq!(fold(sum(&[0x01, 0x02, 0x03], 0)), 0x0102 + 0x0300);
        // Every tail length of the 8-byte loop.
        let data: Vec<u8> = (1..=23).collect();
        for len in 0..data.len() {
            assert_eq!(
                checksum(&data[..len]),
                naive_checksum(&data[..len]),
                "len {len}"
            );
        }
    }

    #[test]
    fn empty_and_zero() {
        assert_eq!(sum(&[], 0), 0);
        assert_eq!(fold(0), 0);
        assert_eq!(checksum(&[]), 0xffff);
        assert_eq!(sum(&[], 0x1234), 0x1234);
    }

    #[test]
    fn carries_from_all_ones() {
        let data = [0xffu8; 64];
        assert_eq!(fold(sum(&data, 0xffff_ffff)), 0xffff);
        assert_eq!(checksum(&data), 0);
        assert_eq!(fold(0xffff_ffff), 0xffff);
        assert_eq!(fold(0x0001_fffe), 0xffff);
    }

    #[test]
    fn pseudo_headers_match_byte_sums() {
        let src = [10, 0, 0, 1];
        let dst = [192, 168, 7, 200];
        let bytes = [10, 0, 0, 1, 192, 168, 7, 200, 0, 17, 0x01, 0x2c];
        assert_eq!(
            fold(pseudo_header_v4(src, dst, 17, 300)),
            fold(sum(&bytes, 0))
        );

        let mut s6 = [0u8; 16];
        let mut d6 = [0u8; 16];
        s6[0] = 0xfd;
        s6[15] = 1;
        d6[0] = 0xfe;
        d6[1] = 0x80;
        d6[15] = 0xff;
        let mut bytes6 = Vec::new();
        bytes6.extend_from_slice(&s6);
        bytes6.extend_from_slice(&d6);
        bytes6.extend_from_slice(&0x0001_0010u32.to_be_bytes());
        bytes6.extend_from_slice(&[0, 0, 0, 58]);
        assert_eq!(
            fold(pseudo_header_v6(&s6, &d6, 58, 0x0001_0010)),
            fold(sum(&bytes6, 0))
        );
    }

    fn udp_segment() -> ([u8; 4], [u8; 4], Vec<u8>) {
        let src = [10, 1, 2, 3];
        let dst = [10, 4, 5, 6];
        let mut seg = vec![0x30, 0x39, 0x00, 0x35, 0, 0, 0, 0];
        seg.extend_from_slice(b"hello, weir");
        let len = seg.len() as u16;
        seg[4..6].copy_from_slice(&len.to_be_bytes());
        (src, dst, seg)
    }

    fn tcp_segment() -> ([u8; 16], [u8; 16], Vec<u8>) {
        let mut src = [0u8; 16];
        let mut dst = [0u8; 16];
        src[..2].copy_from_slice(&[0xfd, 0x00]);
        src[15] = 0x0a;
        dst[..2].copy_from_slice(&[0xfd, 0x00]);
        dst[15] = 0x0b;
        let mut seg = vec![
            0xc0, 0x01, 0x01, 0xbb, // ports
            0x12, 0x34, 0x56, 0x78, // seq
            0x9a, 0xbc, 0xde, 0xf0, // ack
            0x50, 0x18, 0xff, 0xff, // data offset 5, PSH|ACK, window
            0x00, 0x00, 0x00, 0x00, // checksum, urgent
        ];
        seg.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n!");
        (src, dst, seg)
    }

    #[test]
    fn completes_udp_partial() {
        let (src, dst, mut seg) = udp_segment();
        let pseudo = pseudo_header_v4(src, dst, 17, seg.len() as u16);
        let real = !fold(sum(&seg, pseudo));
        seg[6..8].copy_from_slice(&fold(pseudo).to_be_bytes());
        assert_eq!(
            complete_partial(&mut seg, 6, pseudo, true),
            Ok(Partial::Completed)
        );
        assert_eq!(u16::from_be_bytes([seg[6], seg[7]]), real);
        assert_eq!(fold(sum(&seg, pseudo)), 0xffff);
        // Done once, the second call sees a verifying checksum.
        assert_eq!(
            complete_partial(&mut seg, 6, pseudo, true),
            Ok(Partial::NotPartial)
        );
    }

    #[test]
    fn completes_tcp_v6_partial() {
        let (src, dst, mut seg) = tcp_segment();
        let pseudo = pseudo_header_v6(&src, &dst, 6, seg.len() as u32);
        let real = !fold(sum(&seg, pseudo));
        seg[16..18].copy_from_slice(&fold(pseudo).to_be_bytes());
        assert_eq!(
            complete_partial(&mut seg, 16, pseudo, false),
            Ok(Partial::Completed)
        );
        assert_eq!(u16::from_be_bytes([seg[16], seg[17]]), real);
    }

    #[test]
    fn leaves_a_full_checksum_alone() {
        let (src, dst, mut seg) = tcp_segment();
        let pseudo = pseudo_header_v6(&src, &dst, 6, seg.len() as u32);
        let real = !fold(sum(&seg, pseudo));
        seg[16..18].copy_from_slice(&real.to_be_bytes());
        let before = seg.clone();
        assert_eq!(
            complete_partial(&mut seg, 16, pseudo, false),
            Ok(Partial::NotPartial)
        );
        assert_eq!(seg, before);
    }

    /// A full checksum that happens to equal fold(pseudo): the cheap test passes, the full
    /// check verifies, nothing is written.
    #[test]
    fn leaves_a_full_checksum_that_looks_partial_alone() {
        let (src, dst, mut seg) = udp_segment();
        // Choose the last payload word so that the real checksum is fold(pseudo): the
        // segment with the field set to fold(pseudo) must sum, with pseudo, to 0xffff. The
        // adjusted word must be 16-bit aligned.
        if seg.len() % 2 == 1 {
            seg.push(0);
        }
        seg.extend_from_slice(&[0, 0]);
        let len = seg.len() as u16;
        seg[4..6].copy_from_slice(&len.to_be_bytes());
        let pseudo = pseudo_header_v4(src, dst, 17, len);
        seg[6..8].copy_from_slice(&fold(pseudo).to_be_bytes());
        let n = seg.len();
        let partial = fold(sum(&seg, pseudo));
        seg[n - 2..].copy_from_slice(&(!partial).to_be_bytes());
        assert_eq!(fold(sum(&seg, pseudo)), 0xffff);
        let before = seg.clone();
        assert_eq!(
            complete_partial(&mut seg, 6, pseudo, true),
            Ok(Partial::NotPartial)
        );
        assert_eq!(seg, before);
    }

    #[test]
    fn other_field_values_are_not_partial() {
        let (src, dst, mut seg) = udp_segment();
        let pseudo = pseudo_header_v4(src, dst, 17, seg.len() as u16);
        seg[6..8].copy_from_slice(&0x1234u16.to_be_bytes());
        let before = seg.clone();
        assert_eq!(
            complete_partial(&mut seg, 6, pseudo, true),
            Ok(Partial::NotPartial)
        );
        assert_eq!(seg, before);
    }

    #[test]
    fn udp_zero_is_sent_as_all_ones() {
        // A segment whose checksum computes to zero: pseudo + data ≡ 0xffff.
        let mut seg = vec![0u8; 10];
        let pseudo = 0x1234;
        seg[6..8].copy_from_slice(&fold(pseudo).to_be_bytes());
        seg[8..10].copy_from_slice(&(0xffff - 0x1234u16).to_be_bytes());
        assert_eq!(
            complete_partial(&mut seg.clone(), 6, pseudo, false),
            Ok(Partial::Completed)
        );
        let mut tcp = seg.clone();
        complete_partial(&mut tcp, 6, pseudo, false).unwrap();
        assert_eq!(&tcp[6..8], &[0, 0]);
        assert_eq!(
            complete_partial(&mut seg, 6, pseudo, true),
            Ok(Partial::Completed)
        );
        assert_eq!(&seg[6..8], &[0xff, 0xff]);
    }

    #[test]
    fn field_must_fit() {
        let mut seg = [0u8; 7];
        assert_eq!(
            complete_partial(&mut seg, 6, 0, true),
            Err(Malformed::Truncated)
        );
        assert_eq!(
            complete_partial(&mut seg, usize::MAX - 1, 0, true),
            Err(Malformed::Truncated)
        );
        assert_eq!(
            complete_partial(&mut [], 0, 0, false),
            Err(Malformed::Truncated)
        );
        assert!(complete_partial(&mut seg, 4, 0, true).is_ok());
    }

    #[test]
    #[should_panic(expected = "odd checksum offset")]
    fn odd_offset_is_a_caller_bug() {
        let _ = complete_partial(&mut [0u8; 8], 3, 0, false);
    }

    #[test]
    fn update_known_answer() {
        // Decrementing the TTL of the RFC example header: 0x4011 → 0x3f11.
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x3f, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(update16(0xb861, 0x4011, 0x3f11), checksum(&hdr));
    }

    /// RFC 1624 §4's example: HC = 0xdd2f, m = 0x5555 → m' = 0x3285 gives HC' = 0x0000
    /// (eqn. 3), where RFC 1141's eqn. 2 would give 0xffff.
    #[test]
    fn rfc1624_example() {
        assert_eq!(update16(0xdd2f, 0x5555, 0x3285), 0x0000);
    }

    proptest! {
        #[test]
        fn sum_matches_naive(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            prop_assert_eq!(checksum(&data), naive_checksum(&data));
        }

        #[test]
        fn sum_is_associative_at_even_splits(
            data in proptest::collection::vec(any::<u8>(), 0..100),
            split in 0usize..50,
            initial in any::<u32>(),
        ) {
            let split = (split * 2).min(data.len() & !1);
            let whole = fold(sum(&data, initial));
            let parts = fold(sum(&data[split..], sum(&data[..split], initial)));
            prop_assert_eq!(whole, parts);
        }

        /// Incremental update equals recomputation: a random IPv4 header, TTL/protocol word
        /// and an address changed.
        #[test]
        fn update_equals_recompute(
            mut hdr in proptest::array::uniform20(any::<u8>()),
            ttl_proto in any::<u16>(),
            addr in any::<u32>(),
        ) {
            hdr[0] = 0x45;
            hdr[10] = 0;
            hdr[11] = 0;
            let check = checksum(&hdr);

            let old16 = u16::from_be_bytes([hdr[8], hdr[9]]);
            hdr[8..10].copy_from_slice(&ttl_proto.to_be_bytes());
            let check = update16(check, old16, ttl_proto);
            prop_assert_eq!(check, checksum(&hdr));

            let old32 = u32::from_be_bytes([hdr[12], hdr[13], hdr[14], hdr[15]]);
            hdr[12..16].copy_from_slice(&addr.to_be_bytes());
            let check = update32(check, old32, addr);
            prop_assert_eq!(check, checksum(&hdr));
        }

        /// The pseudo-header follows an address rewrite the same way (NAT of an L4 header).
        #[test]
        fn update32_tracks_pseudo_header(
            src in any::<[u8; 4]>(),
            dst in any::<[u8; 4]>(),
            new_src in any::<[u8; 4]>(),
            payload in proptest::collection::vec(any::<u8>(), 8..64),
        ) {
            let mut seg = payload;
            seg[6] = 0;
            seg[7] = 0;
            let len = seg.len() as u16;
            let check = !fold(sum(&seg, pseudo_header_v4(src, dst, 17, len)));
            let updated = update32(check, u32::from_be_bytes(src), u32::from_be_bytes(new_src));
            let recomputed = !fold(sum(&seg, pseudo_header_v4(new_src, dst, 17, len)));
            prop_assert_eq!(updated, recomputed);
        }

        /// Completing the partial form restores the real checksum, for any segment.
        #[test]
        fn completion_restores_real_checksum(
            payload in proptest::collection::vec(any::<u8>(), 8..300),
            src in any::<[u8; 16]>(),
            dst in any::<[u8; 16]>(),
            is_udp in any::<bool>(),
        ) {
            let mut seg = payload;
            let (proto, off) = if is_udp { (17, 6) } else { (6, 2) };
            seg[off] = 0;
            seg[off + 1] = 0;
            let pseudo = pseudo_header_v6(&src, &dst, proto, seg.len() as u32);
            let mut real = !fold(sum(&seg, pseudo));
            if is_udp && real == 0 {
                real = 0xffff;
            }
            seg[off..off + 2].copy_from_slice(&fold(pseudo).to_be_bytes());
            let outcome = complete_partial(&mut seg, off, pseudo, is_udp).unwrap();
            // In the rare case the partial form already verifies it is left alone, and
            // it is a valid checksum then.
            prop_assert_eq!(fold(sum(&seg, pseudo)), 0xffff);
            if outcome == Partial::Completed {
                prop_assert_eq!(u16::from_be_bytes([seg[off], seg[off + 1]]), real);
            }
        }
    }
}
