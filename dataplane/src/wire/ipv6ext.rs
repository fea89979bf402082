//! A bounded walk of the IPv6 extension-header chain (RFC 8200 §4), to find the upper-layer
//! header and the fragment header if there is one.
//!
//! RFC 8200 §4: "Extension headers (except for the Hop-by-Hop Options header) are not
//! processed, inserted, or deleted by any node along a packet's delivery path". A forwarder
//! still has to step over them to see the ports a policy or a NAT rule is about. The walk knows the headers a
//! forwarding path meets, and three length rules cover them:
//!
//! | next header | header                       | length                                  |
//! |-------------|------------------------------|-----------------------------------------|
//! | 0           | Hop-by-Hop Options (§4.3)    | (Hdr Ext Len + 1) × 8                   |
//! | 43          | Routing (§4.4)               | (Hdr Ext Len + 1) × 8                   |
//! | 44          | Fragment (§4.5)              | 8, fixed                                |
//! | 51          | Authentication (RFC 4302)    | (Payload Len + 2) × 4                   |
//! | 60          | Destination Options (§4.6)   | (Hdr Ext Len + 1) × 8                   |
//! | 135         | Mobility (RFC 6275 §6.1)     | (Header Len + 1) × 8                    |
//!
//! Every one of them starts with the Next Header byte and a length byte. The walk stops at
//! anything else, which it reports as the upper-layer protocol: TCP, UDP, ICMPv6, but also
//! ESP (50, whose payload is encrypted), No Next Header (59), and extension headers this
//! walk does not know (HIP 139, Shim6 140, the experimental 253/254), which a caller treats
//! as an unknown upper layer.
//!
//! The rules it enforces:
//!
//! - RFC 8200 §4.1: "IPv6 nodes must accept and attempt to process extension headers in any
//!   order and occurring any number of times in the same packet, except for the Hop-by-Hop
//!   Options header, which is restricted to appear immediately after an IPv6 header only."
//!   A Hop-by-Hop header anywhere else is [`Malformed::BadExtensionChain`].
//! - At most [`MAX_HEADERS`] extension headers; one more is
//!   [`Malformed::BadExtensionChain`]. RFC 8200 sets no limit, but a legitimate packet has
//!   a handful (§4.1 recommends each at most once, Destination Options at most twice), and
//!   the walk must stay bounded on a hostile one.
//! - A header that runs past the end of the payload is [`Malformed::Truncated`]. That holds
//!   for a first fragment too: RFC 8200 §4.5 (following RFC 7112) requires the first
//!   fragment to carry the whole chain through the upper-layer header.
//!
//! **Fragments.** In a first fragment (offset 0) the walk continues past the Fragment
//! header to the upper-layer header. A non-first fragment does not contain the upper-layer
//! header (its data is a piece from the middle of the original payload), so the walk stops
//! at the Fragment header: `upper` is then that header's Next Header field (the first
//! header of the fragmentable part, which may itself be an extension header) and
//! `l4_offset` points at the fragment data, *not* at a header. Check
//! [`Chain::fragment`] before reading L4 ports.
//!
//! The walk is hand-rolled rather than built on smoltcp's `Ipv6ExtHeader` and
//! `Ipv6FragmentHeader`: those cover the generic 8-octet-unit form and the fragment header
//! but not the Authentication header's 4-octet units, and a loop over the slice with the
//! three length rules above is shorter than dispatching to three views and mapping their
//! errors. It reads the slice with `get`, so no input makes it panic.

use super::Malformed;

/// Next Header value of the Hop-by-Hop Options header.
pub const HOP_BY_HOP: u8 = 0;
/// Next Header value of the Routing header.
pub const ROUTING: u8 = 43;
/// Next Header value of the Fragment header.
pub const FRAGMENT: u8 = 44;
/// Next Header value of the Encapsulating Security Payload (not walked: encrypted).
pub const ESP: u8 = 50;
/// Next Header value of the Authentication header.
pub const AUTHENTICATION: u8 = 51;
/// Next Header value meaning nothing follows.
pub const NO_NEXT_HEADER: u8 = 59;
/// Next Header value of the Destination Options header.
pub const DESTINATION_OPTIONS: u8 = 60;
/// Next Header value of the Mobility header.
pub const MOBILITY: u8 = 135;

/// The most extension headers [`walk`] steps over.
pub const MAX_HEADERS: u8 = 8;
/// Length of the Fragment header.
pub const FRAGMENT_HEADER_LEN: usize = 8;

/// What [`walk`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chain {
    /// The upper-layer protocol number, or 59 (No Next Header). For a non-first fragment,
    /// the Next Header field of its Fragment header (see the module doc).
    pub upper: u8,
    /// Offset of the upper-layer header from the start of the IPv6 payload (for a
    /// non-first fragment, of the fragment data).
    pub l4_offset: usize,
    /// The Fragment header, if the chain has one. With more than one (RFC 8200 §4.1 says
    /// each extension header should occur at most once), the last one walked.
    pub fragment: Option<Fragment>,
    /// How many extension headers were walked.
    pub headers: u8,
}

/// The fields of a Fragment header (RFC 8200 §4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    /// Fragment Offset, in 8-octet units.
    pub offset: u16,
    /// The M flag: more fragments follow.
    pub more: bool,
    /// Identification.
    pub ident: u32,
}

impl Fragment {
    /// True for the first fragment (offset 0), which carries the upper-layer header.
    /// An atomic fragment (offset 0, M clear; RFC 6946) is a first fragment too.
    pub fn is_first(&self) -> bool {
        self.offset == 0
    }
}

/// Walks the extension headers at the start of an IPv6 payload.
///
/// `payload` is the IPv6 payload (everything after the 40-byte fixed header);
/// `first_next_header` is the Next Header field of the fixed header.
///
/// # Errors
///
/// - [`Malformed::Truncated`] if an extension header runs past the end of `payload`.
/// - [`Malformed::BadExtensionChain`] if Hop-by-Hop Options is not the first header, or
///   there are more than [`MAX_HEADERS`] extension headers.
pub fn walk(payload: &[u8], first_next_header: u8) -> Result<Chain, Malformed> {
    let mut next = first_next_header;
    let mut offset = 0usize;
    let mut headers = 0u8;
    let mut fragment = None;
    loop {
        match next {
            HOP_BY_HOP | ROUTING | FRAGMENT | AUTHENTICATION | DESTINATION_OPTIONS | MOBILITY => {}
            upper => {
                return Ok(Chain {
                    upper,
                    l4_offset: offset,
                    fragment,
                    headers,
                })
            }
        }
        if next == HOP_BY_HOP && headers != 0 {
            return Err(Malformed::BadExtensionChain);
        }
        if headers == MAX_HEADERS {
            return Err(Malformed::BadExtensionChain);
        }
        let Some(&[following, len_field]) = payload.get(offset..offset + 2) else {
            return Err(Malformed::Truncated);
        };
        let len = match next {
            FRAGMENT => FRAGMENT_HEADER_LEN,
            AUTHENTICATION => (usize::from(len_field) + 2) * 4,
            _ => (usize::from(len_field) + 1) * 8,
        };
        let header = payload
            .get(offset..offset + len)
            .ok_or(Malformed::Truncated)?;
        headers += 1;
        offset += len;
        if let (FRAGMENT, &[_, _, off_hi, off_lo, i0, i1, i2, i3]) = (next, header) {
            let frag = Fragment {
                offset: u16::from_be_bytes([off_hi, off_lo]) >> 3,
                more: off_lo & 1 != 0,
                ident: u32::from_be_bytes([i0, i1, i2, i3]),
            };
            fragment = Some(frag);
            if !frag.is_first() {
                return Ok(Chain {
                    upper: following,
                    l4_offset: offset,
                    fragment,
                    headers,
                });
            }
        }
        next = following;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: u8 = 6;
    const UDP: u8 = 17;

    /// A generic extension header (8-octet units) of `units` × 8 + 8 bytes.
    fn ext(next: u8, units: u8) -> Vec<u8> {
        let mut h = vec![0u8; (usize::from(units) + 1) * 8];
        h[0] = next;
        h[1] = units;
        // PadN filling the options area, to look like a real options header.
        h[2] = 1;
        h[3] = (h.len() - 4) as u8;
        h
    }

    fn frag(next: u8, offset: u16, more: bool, ident: u32) -> Vec<u8> {
        let mut h = vec![next, 0];
        h.extend_from_slice(&((offset << 3) | u16::from(more)).to_be_bytes());
        h.extend_from_slice(&ident.to_be_bytes());
        h
    }

    fn ah(next: u8, payload_len: u8) -> Vec<u8> {
        let mut h = vec![0u8; (usize::from(payload_len) + 2) * 4];
        h[0] = next;
        h[1] = payload_len;
        h
    }

    fn concat(parts: &[Vec<u8>]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn no_extension_headers() {
        let c = walk(&[0u8; 8], UDP).unwrap();
        assert_eq!(
            c,
            Chain {
                upper: UDP,
                l4_offset: 0,
                fragment: None,
                headers: 0
            }
        );
        // The upper layer itself is not checked: an empty payload is fine here.
        assert_eq!(walk(&[], TCP).unwrap().l4_offset, 0);
        assert_eq!(walk(&[], NO_NEXT_HEADER).unwrap().upper, NO_NEXT_HEADER);
    }

    #[test]
    fn every_header_type() {
        let cases: [(u8, Vec<u8>); 6] = [
            (HOP_BY_HOP, ext(TCP, 0)),
            (ROUTING, ext(TCP, 2)),
            (FRAGMENT, frag(TCP, 0, true, 7)),
            (AUTHENTICATION, ah(TCP, 4)),
            (DESTINATION_OPTIONS, ext(TCP, 1)),
            (MOBILITY, ext(TCP, 0)),
        ];
        for (first, h) in cases {
            let len = h.len();
            let c = walk(&h, first).unwrap();
            assert_eq!(
                (c.upper, c.l4_offset, c.headers),
                (TCP, len, 1),
                "header {first}"
            );
        }
        assert_eq!(ah(TCP, 4).len(), 24, "AH length is (len + 2) * 4");
    }

    #[test]
    fn zero_length_options_header_is_legal() {
        let h = ext(UDP, 0);
        assert_eq!(h.len(), 8);
        assert_eq!(walk(&h, DESTINATION_OPTIONS).unwrap().l4_offset, 8);
    }

    #[test]
    fn a_long_chain() {
        let p = concat(&[
            ext(DESTINATION_OPTIONS, 0),
            ext(ROUTING, 1),
            ext(FRAGMENT, 2),
            frag(AUTHENTICATION, 0, false, 0xabcd_0123),
            ah(DESTINATION_OPTIONS, 1),
            ext(UDP, 0),
            vec![0u8; 8],
        ]);
        let c = walk(&p, HOP_BY_HOP).unwrap();
        assert_eq!(c.upper, UDP);
        assert_eq!(c.headers, 6);
        assert_eq!(c.l4_offset, 8 + 16 + 24 + 8 + 12 + 8);
        assert_eq!(
            c.fragment,
            Some(Fragment {
                offset: 0,
                more: false,
                ident: 0xabcd_0123
            })
        );
        assert!(c.fragment.unwrap().is_first());
    }

    #[test]
    fn esp_and_no_next_header_stop_the_walk() {
        let p = concat(&[ext(ESP, 0), vec![0xff; 16]]);
        assert_eq!(
            walk(&p, DESTINATION_OPTIONS).unwrap(),
            Chain {
                upper: ESP,
                l4_offset: 8,
                fragment: None,
                headers: 1
            }
        );
        let p = ext(NO_NEXT_HEADER, 0);
        assert_eq!(walk(&p, HOP_BY_HOP).unwrap().upper, NO_NEXT_HEADER);
    }

    #[test]
    fn first_fragment_continues_to_the_upper_header() {
        let p = concat(&[
            frag(DESTINATION_OPTIONS, 0, true, 1),
            ext(TCP, 0),
            vec![0; 20],
        ]);
        let c = walk(&p, FRAGMENT).unwrap();
        assert_eq!((c.upper, c.l4_offset, c.headers), (TCP, 16, 2));
        let f = c.fragment.unwrap();
        assert!(f.is_first() && f.more);
        assert_eq!(f.ident, 1);
    }

    #[test]
    fn non_first_fragment_stops_at_the_fragment_header() {
        // The data after a non-first fragment header is arbitrary bytes, not a header:
        // the walk must not read it, even when it looks like a truncated header.
        let p = concat(&[
            ext(FRAGMENT, 0),
            frag(DESTINATION_OPTIONS, 185, false, 99),
            vec![0xff],
        ]);
        let c = walk(&p, HOP_BY_HOP).unwrap();
        assert_eq!(c.upper, DESTINATION_OPTIONS);
        assert_eq!(c.l4_offset, 16);
        assert_eq!(c.headers, 2);
        assert_eq!(
            c.fragment,
            Some(Fragment {
                offset: 185,
                more: false,
                ident: 99
            })
        );
        assert!(!c.fragment.unwrap().is_first());
    }

    #[test]
    fn a_second_fragment_header_is_the_one_reported() {
        let p = concat(&[
            frag(FRAGMENT, 0, true, 1),
            frag(UDP, 3, true, 2),
            vec![0; 8],
        ]);
        let c = walk(&p, FRAGMENT).unwrap();
        assert_eq!((c.upper, c.l4_offset, c.headers), (UDP, 16, 2));
        assert_eq!(c.fragment.unwrap().ident, 2);
    }

    #[test]
    fn fragment_offset_uses_13_bits() {
        let p = frag(UDP, 0x1fff, true, u32::MAX);
        let c = walk(&p, FRAGMENT).unwrap();
        let f = c.fragment.unwrap();
        assert_eq!((f.offset, f.more, f.ident), (0x1fff, true, u32::MAX));
        // The reserved bits between offset and M are ignored.
        let mut p = p;
        p[3] |= 0b110;
        assert_eq!(walk(&p, FRAGMENT).unwrap().fragment.unwrap().offset, 0x1fff);
    }

    #[test]
    fn hop_by_hop_must_be_first() {
        let p = concat(&[ext(HOP_BY_HOP, 0), ext(UDP, 0)]);
        assert_eq!(
            walk(&p, DESTINATION_OPTIONS),
            Err(Malformed::BadExtensionChain)
        );
        let p = concat(&[ext(HOP_BY_HOP, 0), ext(UDP, 0)]);
        assert_eq!(walk(&p, HOP_BY_HOP), Err(Malformed::BadExtensionChain));
    }

    #[test]
    fn eight_headers_walk_nine_do_not() {
        let chain = |n: usize| {
            let mut parts: Vec<Vec<u8>> = (1..n).map(|_| ext(DESTINATION_OPTIONS, 0)).collect();
            parts.push(ext(UDP, 0));
            concat(&parts)
        };
        let c = walk(&chain(8), DESTINATION_OPTIONS).unwrap();
        assert_eq!((c.upper, c.headers, c.l4_offset), (UDP, 8, 64));
        assert_eq!(
            walk(&chain(9), DESTINATION_OPTIONS),
            Err(Malformed::BadExtensionChain)
        );
    }

    #[test]
    fn runs_off_the_end_at_every_byte() {
        let p = concat(&[
            ext(ROUTING, 0),
            ext(FRAGMENT, 1),
            frag(AUTHENTICATION, 0, true, 5),
            ah(DESTINATION_OPTIONS, 2),
            ext(MOBILITY, 0),
            ext(TCP, 0),
        ]);
        let full = walk(&p, HOP_BY_HOP).unwrap();
        assert_eq!((full.upper, full.l4_offset), (TCP, p.len()));
        for len in 0..p.len() {
            assert_eq!(
                walk(&p[..len], HOP_BY_HOP),
                Err(Malformed::Truncated),
                "len {len}"
            );
        }
    }

    #[test]
    fn largest_lengths_stay_in_bounds() {
        let p = concat(&[ext(UDP, 255)]);
        assert_eq!(p.len(), 2048);
        assert_eq!(walk(&p, ROUTING).unwrap().l4_offset, 2048);
        assert_eq!(walk(&p[..2047], ROUTING), Err(Malformed::Truncated));
        let p = ah(UDP, 255);
        assert_eq!(walk(&p, AUTHENTICATION).unwrap().l4_offset, 1028);
    }
}
