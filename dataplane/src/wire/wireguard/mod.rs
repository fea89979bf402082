//! WireGuard messages (the WireGuard paper, §5.4), as they arrive in UDP payloads.
//!
//! There are four, told apart by their first byte; three reserved bytes follow it. The
//! paper's `reserved := 0^3` is enforced: Linux reads type and reserved bytes together as
//! one little-endian 32-bit word (`__le32 type` in `messages.h`) and drops anything else,
//! so a message with non-zero reserved bytes is not one a WireGuard peer would accept.
//! (Cloudflare's WARP puts a client id there; it is not a peer of ours.)
//!
//! | type | message                        | paper  | length                     |
//! |------|--------------------------------|--------|----------------------------|
//! | 1    | handshake initiation           | §5.4.2 | exactly 148                |
//! | 2    | handshake response             | §5.4.3 | exactly 92                 |
//! | 3    | cookie reply                   | §5.4.7 | exactly 64                 |
//! | 4    | transport data                 | §5.4.6 | 16 + encrypted packet ≥ 32 |
//!
//! **Byte order.** The indices and the counter are little-endian on the wire (Linux:
//! `__le32 sender_index`, `__le64 counter`), unlike every other header in this module.
//! Indices are opaque values the peer chose; reading them little-endian matters only
//! so that they compare equal to what we wrote with `to_le_bytes`.
//!
//! **Transport data length.** The encrypted packet is the AEAD of the zero-padded
//! plaintext, so it is the padded length plus the 16-byte Poly1305 tag; an empty plaintext
//! (a keepalive) gives the 32-byte minimum. The paper pads the plaintext to a multiple of
//! 16 bytes, but the padding never takes a packet past the tunnel MTU: the reference
//! implementation's `calculate_skb_padding` (Linux `drivers/net/wireguard/send.c`) pads to
//! `min(mtu, ALIGN(len, 16))`, and wireguard-go's `calculatePaddingSize` does the same. With
//! the default MTU of 1420, which is not a multiple of 16, every full-sized packet is
//! therefore sent with an encrypted length that is not a multiple of 16, and no receiver
//! checks it (Linux checks only the 32-byte minimum, `MESSAGE_MINIMUM_LENGTH`). So
//! [`parse`] enforces only the minimum; requiring `(len - 16) % 16 == 0` would drop valid
//! traffic.
//!
//! Everything here is a borrowed, read-only view: [`parse`] checks the type, the reserved
//! bytes and the length, after which no accessor panics. The cryptography (mac1, mac2, the
//! AEADs) is the `crypto` crate's; this module only says where the bytes are. The outer
//! Ethernet/IP/UDP headers that carry these messages between nodes are [`outer`]'s.

pub mod outer;

use core::ops::Range;

use super::Malformed;

/// The conventional WireGuard UDP port (the protocol's own documentation and most
/// configurations use it; `wg` itself picks a random port when none is set).
pub const DEFAULT_PORT: u16 = 51820;

/// Message type of a handshake initiation.
pub const TYPE_HANDSHAKE_INITIATION: u8 = 1;
/// Message type of a handshake response.
pub const TYPE_HANDSHAKE_RESPONSE: u8 = 2;
/// Message type of a cookie reply.
pub const TYPE_COOKIE_REPLY: u8 = 3;
/// Message type of transport data.
pub const TYPE_TRANSPORT_DATA: u8 = 4;

/// Length of a handshake initiation.
pub const HANDSHAKE_INITIATION_LEN: usize = field::initiation::MAC2.end;
/// Length of a handshake response.
pub const HANDSHAKE_RESPONSE_LEN: usize = field::response::MAC2.end;
/// Length of a cookie reply.
pub const COOKIE_REPLY_LEN: usize = field::cookie::ENCRYPTED_COOKIE.end;
/// Length of the transport data header (type, reserved, receiver, counter).
pub const TRANSPORT_HEADER_LEN: usize = field::transport::COUNTER.end;
/// Length of the Poly1305 tag that ends every AEAD output.
pub const TAG_LEN: usize = 16;
/// Shortest transport data message: a keepalive, whose encrypted packet is just the tag.
pub const TRANSPORT_MIN_LEN: usize = TRANSPORT_HEADER_LEN + TAG_LEN;

/// Byte offsets of each message's fields.
pub mod field {
    use core::ops::Range;

    /// Message type.
    pub const TYPE: usize = 0;
    /// Three reserved bytes, zero.
    pub const RESERVED: Range<usize> = 1..4;

    /// Handshake initiation (paper §5.4.2).
    pub mod initiation {
        use core::ops::Range;

        /// Sender index, little-endian.
        pub const SENDER: Range<usize> = 4..8;
        /// Unencrypted ephemeral public key.
        pub const EPHEMERAL: Range<usize> = 8..40;
        /// AEAD of the initiator's static public key (32 + 16).
        pub const ENCRYPTED_STATIC: Range<usize> = 40..88;
        /// AEAD of a TAI64N timestamp (12 + 16).
        pub const ENCRYPTED_TIMESTAMP: Range<usize> = 88..116;
        /// mac1, over the bytes before it.
        pub const MAC1: Range<usize> = 116..132;
        /// mac2, over the bytes before it.
        pub const MAC2: Range<usize> = 132..148;
    }

    /// Handshake response (paper §5.4.3).
    pub mod response {
        use core::ops::Range;

        /// Sender index, little-endian.
        pub const SENDER: Range<usize> = 4..8;
        /// Receiver index (the initiator's sender index), little-endian.
        pub const RECEIVER: Range<usize> = 8..12;
        /// Unencrypted ephemeral public key.
        pub const EPHEMERAL: Range<usize> = 12..44;
        /// AEAD of the empty string: only a tag.
        pub const ENCRYPTED_NOTHING: Range<usize> = 44..60;
        /// mac1, over the bytes before it.
        pub const MAC1: Range<usize> = 60..76;
        /// mac2, over the bytes before it.
        pub const MAC2: Range<usize> = 76..92;
    }

    /// Cookie reply (paper §5.4.7).
    pub mod cookie {
        use core::ops::Range;

        /// Receiver index (the sender index of the message being answered), little-endian.
        pub const RECEIVER: Range<usize> = 4..8;
        /// XChaCha20Poly1305 nonce.
        pub const NONCE: Range<usize> = 8..32;
        /// AEAD of the 16-byte cookie (16 + 16).
        pub const ENCRYPTED_COOKIE: Range<usize> = 32..64;
    }

    /// Transport data (paper §5.4.6).
    pub mod transport {
        use core::ops::Range;

        /// Receiver index, little-endian.
        pub const RECEIVER: Range<usize> = 4..8;
        /// Nonce counter, little-endian.
        pub const COUNTER: Range<usize> = 8..16;
        /// Start of the encrypted packet, which runs to the end of the message.
        pub const ENCRYPTED_PACKET: usize = 16;
    }
}

/// A WireGuard message, checked by [`parse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message<'a> {
    /// Type 1.
    HandshakeInitiation(HandshakeInitiation<'a>),
    /// Type 2.
    HandshakeResponse(HandshakeResponse<'a>),
    /// Type 3.
    CookieReply(CookieReply<'a>),
    /// Type 4.
    TransportData(TransportData<'a>),
}

/// Reads a UDP payload as a WireGuard message.
///
/// # Errors
///
/// - [`Malformed::Truncated`] if the payload is shorter than its type needs (or than the
///   four-byte type and reserved field).
/// - [`Malformed::BadField`] for a type other than 1–4, or non-zero reserved bytes.
/// - [`Malformed::BadLength`] if a handshake or cookie message is longer than its fixed
///   length.
pub fn parse(bytes: &[u8]) -> Result<Message<'_>, Malformed> {
    let Some(&[ty, r0, r1, r2]) = bytes.get(..4) else {
        return Err(Malformed::Truncated);
    };
    if [r0, r1, r2] != [0, 0, 0] {
        return Err(Malformed::BadField);
    }
    match ty {
        TYPE_HANDSHAKE_INITIATION => {
            exact(bytes, HANDSHAKE_INITIATION_LEN)?;
            Ok(Message::HandshakeInitiation(HandshakeInitiation { bytes }))
        }
        TYPE_HANDSHAKE_RESPONSE => {
            exact(bytes, HANDSHAKE_RESPONSE_LEN)?;
            Ok(Message::HandshakeResponse(HandshakeResponse { bytes }))
        }
        TYPE_COOKIE_REPLY => {
            exact(bytes, COOKIE_REPLY_LEN)?;
            Ok(Message::CookieReply(CookieReply { bytes }))
        }
        TYPE_TRANSPORT_DATA => {
            if bytes.len() < TRANSPORT_MIN_LEN {
                return Err(Malformed::Truncated);
            }
            Ok(Message::TransportData(TransportData { bytes }))
        }
        _ => Err(Malformed::BadField),
    }
}

impl<'a> Message<'a> {
    /// The message type byte.
    pub fn message_type(&self) -> u8 {
        self.as_bytes()[field::TYPE]
    }

    /// The receiver index: which of our sessions or handshakes the message is for. `None`
    /// for a handshake initiation, which is addressed by our public key instead.
    pub fn receiver_index(&self) -> Option<u32> {
        match self {
            Message::HandshakeInitiation(_) => None,
            Message::HandshakeResponse(m) => Some(m.receiver_index()),
            Message::CookieReply(m) => Some(m.receiver_index()),
            Message::TransportData(m) => Some(m.receiver_index()),
        }
    }

    /// The whole message.
    pub fn as_bytes(&self) -> &'a [u8] {
        match self {
            Message::HandshakeInitiation(m) => m.bytes,
            Message::HandshakeResponse(m) => m.bytes,
            Message::CookieReply(m) => m.bytes,
            Message::TransportData(m) => m.bytes,
        }
    }
}

/// A handshake initiation (type 1, paper §5.4.2), exactly 148 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeInitiation<'a> {
    bytes: &'a [u8],
}

impl<'a> HandshakeInitiation<'a> {
    /// The initiator's index for this handshake, little-endian on the wire.
    pub fn sender_index(&self) -> u32 {
        read_u32_le(self.bytes, field::initiation::SENDER)
    }

    /// The initiator's unencrypted ephemeral public key, 32 bytes.
    pub fn unencrypted_ephemeral(&self) -> &'a [u8] {
        &self.bytes[field::initiation::EPHEMERAL]
    }

    /// The initiator's static public key, encrypted: 48 bytes.
    pub fn encrypted_static(&self) -> &'a [u8] {
        &self.bytes[field::initiation::ENCRYPTED_STATIC]
    }

    /// The TAI64N timestamp, encrypted: 28 bytes.
    pub fn encrypted_timestamp(&self) -> &'a [u8] {
        &self.bytes[field::initiation::ENCRYPTED_TIMESTAMP]
    }

    /// mac1, 16 bytes.
    pub fn mac1(&self) -> &'a [u8] {
        &self.bytes[field::initiation::MAC1]
    }

    /// mac2, 16 bytes (zero unless the initiator holds a cookie).
    pub fn mac2(&self) -> &'a [u8] {
        &self.bytes[field::initiation::MAC2]
    }

    /// The paper's `msg_α`: the bytes mac1 is computed over (everything before it).
    pub fn msg_alpha(&self) -> &'a [u8] {
        &self.bytes[..field::initiation::MAC1.start]
    }

    /// The paper's `msg_β`: the bytes mac2 is computed over (everything before it).
    pub fn msg_beta(&self) -> &'a [u8] {
        &self.bytes[..field::initiation::MAC2.start]
    }

    /// The whole message.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

/// A handshake response (type 2, paper §5.4.3), exactly 92 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeResponse<'a> {
    bytes: &'a [u8],
}

impl<'a> HandshakeResponse<'a> {
    /// The responder's index for the new session, little-endian on the wire.
    pub fn sender_index(&self) -> u32 {
        read_u32_le(self.bytes, field::response::SENDER)
    }

    /// The initiator's sender index, echoed, little-endian on the wire.
    pub fn receiver_index(&self) -> u32 {
        read_u32_le(self.bytes, field::response::RECEIVER)
    }

    /// The responder's unencrypted ephemeral public key, 32 bytes.
    pub fn unencrypted_ephemeral(&self) -> &'a [u8] {
        &self.bytes[field::response::EPHEMERAL]
    }

    /// The AEAD of the empty string: a 16-byte tag.
    pub fn encrypted_nothing(&self) -> &'a [u8] {
        &self.bytes[field::response::ENCRYPTED_NOTHING]
    }

    /// mac1, 16 bytes.
    pub fn mac1(&self) -> &'a [u8] {
        &self.bytes[field::response::MAC1]
    }

    /// mac2, 16 bytes.
    pub fn mac2(&self) -> &'a [u8] {
        &self.bytes[field::response::MAC2]
    }

    /// The paper's `msg_α`: the bytes mac1 is computed over.
    pub fn msg_alpha(&self) -> &'a [u8] {
        &self.bytes[..field::response::MAC1.start]
    }

    /// The paper's `msg_β`: the bytes mac2 is computed over.
    pub fn msg_beta(&self) -> &'a [u8] {
        &self.bytes[..field::response::MAC2.start]
    }

    /// The whole message.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

/// A cookie reply (type 3, paper §5.4.7), exactly 64 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookieReply<'a> {
    bytes: &'a [u8],
}

impl<'a> CookieReply<'a> {
    /// The sender index of the message this answers, little-endian on the wire.
    pub fn receiver_index(&self) -> u32 {
        read_u32_le(self.bytes, field::cookie::RECEIVER)
    }

    /// The 24-byte XChaCha20Poly1305 nonce.
    pub fn nonce(&self) -> &'a [u8] {
        &self.bytes[field::cookie::NONCE]
    }

    /// The cookie, encrypted: 32 bytes.
    pub fn encrypted_cookie(&self) -> &'a [u8] {
        &self.bytes[field::cookie::ENCRYPTED_COOKIE]
    }

    /// The whole message.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

/// A transport data message (type 4, paper §5.4.6), at least 32 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportData<'a> {
    bytes: &'a [u8],
}

impl<'a> TransportData<'a> {
    /// Our index for the session, little-endian on the wire.
    pub fn receiver_index(&self) -> u32 {
        read_u32_le(self.bytes, field::transport::RECEIVER)
    }

    /// The nonce counter, little-endian on the wire.
    pub fn counter(&self) -> u64 {
        let b = &self.bytes[field::transport::COUNTER];
        u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    }

    /// The encrypted, padded packet including its trailing 16-byte tag.
    pub fn encrypted_packet(&self) -> &'a [u8] {
        &self.bytes[field::transport::ENCRYPTED_PACKET..]
    }

    /// True for a keepalive: the encrypted packet is only a tag.
    pub fn is_keepalive(&self) -> bool {
        self.bytes.len() == TRANSPORT_MIN_LEN
    }

    /// The whole message.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

fn exact(bytes: &[u8], len: usize) -> Result<(), Malformed> {
    match bytes.len().cmp(&len) {
        core::cmp::Ordering::Less => Err(Malformed::Truncated),
        core::cmp::Ordering::Equal => Ok(()),
        core::cmp::Ordering::Greater => Err(Malformed::BadLength),
    }
}

fn read_u32_le(b: &[u8], r: Range<usize>) -> u32 {
    let b = &b[r];
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message of `len` bytes with the given type, every other byte its offset (mod 256)
    /// and the reserved bytes zero.
    fn message(ty: u8, len: usize) -> Vec<u8> {
        let mut m: Vec<u8> = (0..len).map(|i| i as u8).collect();
        m[0] = ty;
        m[1..4].fill(0);
        m
    }

    #[test]
    fn initiation_fields() {
        let mut m = message(1, 148);
        m[4..8].copy_from_slice(&0x1234_5678u32.to_le_bytes());
        let Ok(Message::HandshakeInitiation(h)) = parse(&m) else {
            panic!("not an initiation");
        };
        assert_eq!(
            &m[4..8],
            &[0x78, 0x56, 0x34, 0x12],
            "little-endian on the wire"
        );
        assert_eq!(h.sender_index(), 0x1234_5678);
        assert_eq!(h.unencrypted_ephemeral(), &m[8..40]);
        assert_eq!(h.encrypted_static().len(), 48);
        assert_eq!(h.encrypted_timestamp().len(), 28);
        assert_eq!(h.encrypted_timestamp()[0], 88);
        assert_eq!(h.mac1(), &m[116..132]);
        assert_eq!(h.mac2(), &m[132..148]);
        assert_eq!(h.msg_alpha(), &m[..116]);
        assert_eq!(h.msg_beta(), &m[..132]);
        assert_eq!(h.as_bytes(), &m[..]);
        let msg = parse(&m).unwrap();
        assert_eq!(msg.receiver_index(), None);
        assert_eq!(msg.message_type(), 1);
    }

    #[test]
    fn response_fields() {
        let mut m = message(2, 92);
        m[4..8].copy_from_slice(&7u32.to_le_bytes());
        m[8..12].copy_from_slice(&0xdead_beefu32.to_le_bytes());
        let Ok(Message::HandshakeResponse(r)) = parse(&m) else {
            panic!("not a response");
        };
        assert_eq!(r.sender_index(), 7);
        assert_eq!(r.receiver_index(), 0xdead_beef);
        assert_eq!(r.unencrypted_ephemeral(), &m[12..44]);
        assert_eq!(r.encrypted_nothing(), &m[44..60]);
        assert_eq!(r.mac1(), &m[60..76]);
        assert_eq!(r.mac2(), &m[76..92]);
        assert_eq!(r.msg_alpha().len(), 60);
        assert_eq!(r.msg_beta().len(), 76);
        assert_eq!(r.as_bytes().len(), 92);
        assert_eq!(parse(&m).unwrap().receiver_index(), Some(0xdead_beef));
    }

    #[test]
    fn cookie_fields() {
        let mut m = message(3, 64);
        m[4..8].copy_from_slice(&1u32.to_le_bytes());
        let Ok(Message::CookieReply(c)) = parse(&m) else {
            panic!("not a cookie reply");
        };
        assert_eq!(c.receiver_index(), 1);
        assert_eq!(c.nonce(), &m[8..32]);
        assert_eq!(c.encrypted_cookie(), &m[32..64]);
        assert_eq!(c.as_bytes().len(), 64);
        assert_eq!(parse(&m).unwrap().receiver_index(), Some(1));
    }

    #[test]
    fn transport_fields() {
        let mut m = message(4, 16 + 32 + 16);
        m[4..8].copy_from_slice(&9u32.to_le_bytes());
        m[8..16].copy_from_slice(&0x0102_0304_0506_0708u64.to_le_bytes());
        let Ok(Message::TransportData(t)) = parse(&m) else {
            panic!("not transport data");
        };
        assert_eq!(t.receiver_index(), 9);
        assert_eq!(
            &m[8..16],
            &[8, 7, 6, 5, 4, 3, 2, 1],
            "little-endian on the wire"
        );
        assert_eq!(t.counter(), 0x0102_0304_0506_0708);
        assert_eq!(t.encrypted_packet(), &m[16..]);
        assert!(!t.is_keepalive());
        assert_eq!(t.as_bytes().len(), 64);
        assert_eq!(parse(&m).unwrap().receiver_index(), Some(9));
    }

    #[test]
    fn keepalive_is_the_minimum() {
        let m = message(4, 32);
        let Ok(Message::TransportData(t)) = parse(&m) else {
            panic!("not transport data");
        };
        assert!(t.is_keepalive());
        assert_eq!(t.encrypted_packet().len(), TAG_LEN);
    }

    /// A full-sized packet through a tunnel with the default MTU of 1420 is not padded to
    /// a multiple of 16 (the padding stops at the MTU) and must parse.
    #[test]
    fn unpadded_full_mtu_packet_parses() {
        let m = message(4, TRANSPORT_HEADER_LEN + 1420 + TAG_LEN);
        assert_ne!((m.len() - TRANSPORT_HEADER_LEN) % 16, 0);
        assert!(matches!(parse(&m), Ok(Message::TransportData(_))));
    }

    #[test]
    fn lengths_are_enforced() {
        for (ty, len) in [(1u8, 148usize), (2, 92), (3, 64)] {
            let m = message(ty, len + 1);
            for l in 0..len {
                assert_eq!(
                    parse(&m[..l]),
                    Err(Malformed::Truncated),
                    "type {ty} len {l}"
                );
            }
            assert!(parse(&m[..len]).is_ok());
            assert_eq!(parse(&m), Err(Malformed::BadLength));
        }
        let m = message(4, 100);
        for l in 0..32 {
            assert_eq!(parse(&m[..l]), Err(Malformed::Truncated), "type 4 len {l}");
        }
        for l in 32..=100 {
            assert!(parse(&m[..l]).is_ok(), "type 4 len {l}");
        }
    }

    #[test]
    fn reserved_must_be_zero() {
        for i in 1..4 {
            let mut m = message(4, 32);
            m[i] = 1;
            assert_eq!(parse(&m), Err(Malformed::BadField));
        }
    }

    #[test]
    fn unknown_types_are_refused() {
        for ty in [0u8, 5, 0x80, 0xff] {
            assert_eq!(parse(&message(ty, 148)), Err(Malformed::BadField));
        }
    }
}
