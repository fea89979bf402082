//! The SCTP common header (RFC 9260 §3.1), enough to classify and translate SCTP flows.
//!
//! RFC 9260 §3.1, "SCTP Common Header Field Descriptions":
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |      Source Port Number       |    Destination Port Number    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                      Verification Tag                         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                           Checksum                            |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Kubernetes Services and NetworkPolicies name SCTP ports, so the dataplane needs the ports
//! (and must rewrite them for NAT); smoltcp has no SCTP, hence this module. The chunks that
//! follow the common header are not interpreted.
//!
//! The checksum is CRC32c over the whole packet (RFC 9260 Appendix A), not the Internet
//! checksum: it cannot be updated incrementally with [`super::checksum`], so after a port
//! rewrite it has to be recomputed over the packet (or left to a peer that does not check
//! it). [`SctpPacket::checksum`] reads the four bytes big-endian as the diagram shows; the
//! byte order in which a sender lays out the CRC value is the sender's business.
//!
//! Once [`SctpPacket::new_checked`] has returned `Ok`, no accessor panics.

use super::Malformed;

/// Length of the SCTP common header.
pub const HEADER_LEN: usize = field::CHECKSUM.end;

/// Byte offsets in the common header.
pub mod field {
    use core::ops::Range;

    /// Source port number.
    pub const SRC_PORT: Range<usize> = 0..2;
    /// Destination port number.
    pub const DST_PORT: Range<usize> = 2..4;
    /// Verification tag.
    pub const VERIFICATION_TAG: Range<usize> = 4..8;
    /// CRC32c checksum.
    pub const CHECKSUM: Range<usize> = 8..12;
}

/// A read/write view of an SCTP packet: the common header and the chunks behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SctpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> SctpPacket<T> {
    /// Wraps a buffer without checking its length. Accessors may panic on a buffer shorter
    /// than [`HEADER_LEN`]; use [`Self::new_checked`] for bytes from the wire.
    pub const fn new_unchecked(buffer: T) -> Self {
        SctpPacket { buffer }
    }

    /// Wraps a buffer after checking that the common header fits.
    ///
    /// # Errors
    ///
    /// [`Malformed::Truncated`] if the buffer is shorter than [`HEADER_LEN`].
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds the common header.
    ///
    /// # Errors
    ///
    /// [`Malformed::Truncated`] if the buffer is shorter than [`HEADER_LEN`].
    pub fn check_len(&self) -> Result<(), Malformed> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Malformed::Truncated)
        } else {
            Ok(())
        }
    }

    /// Unwraps the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Source port number.
    #[inline]
    pub fn src_port(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[field::SRC_PORT.start], b[field::SRC_PORT.start + 1]])
    }

    /// Destination port number.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[field::DST_PORT.start], b[field::DST_PORT.start + 1]])
    }

    /// Verification tag: the receiver uses it to validate the sender (RFC 9260 §3.1). It is
    /// zero in a packet carrying an INIT chunk.
    #[inline]
    pub fn verification_tag(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::VERIFICATION_TAG.start)
    }

    /// The checksum field, read big-endian.
    #[inline]
    pub fn checksum(&self) -> u32 {
        read_u32(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// The chunks after the common header, uninterpreted.
    #[inline]
    pub fn chunks(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

/// Writes the checksum of the SCTP packet `packet` (common header and chunks): CRC32c
/// over the packet with the checksum field zero, stored least significant byte first, as
/// RFC 9260 Appendix A's reference code and Linux (`sctp_compute_cksum`) do. A slice
/// shorter than the common header is left as is.
pub fn set_checksum(packet: &mut [u8]) {
    if packet.len() < HEADER_LEN {
        return;
    }
    packet[field::CHECKSUM].copy_from_slice(&[0; 4]);
    let crc = crc32c::crc32c(packet);
    packet[field::CHECKSUM].copy_from_slice(&crc.to_le_bytes());
}

/// Whether the checksum of `packet` verifies (see [`set_checksum`]).
pub fn checksum_ok(packet: &[u8]) -> bool {
    if packet.len() < HEADER_LEN {
        return false;
    }
    let mut stored = [0u8; 4];
    stored.copy_from_slice(&packet[field::CHECKSUM]);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&packet[..8]), &[0; 4]);
    let crc = crc32c::crc32c_append(crc, &packet[HEADER_LEN..]);
    crc.to_le_bytes() == stored
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> SctpPacket<T> {
    /// Sets the source port number.
    #[inline]
    pub fn set_src_port(&mut self, port: u16) {
        self.buffer.as_mut()[field::SRC_PORT].copy_from_slice(&port.to_be_bytes());
    }

    /// Sets the destination port number.
    #[inline]
    pub fn set_dst_port(&mut self, port: u16) {
        self.buffer.as_mut()[field::DST_PORT].copy_from_slice(&port.to_be_bytes());
    }

    /// Sets the verification tag.
    #[inline]
    pub fn set_verification_tag(&mut self, tag: u32) {
        self.buffer.as_mut()[field::VERIFICATION_TAG].copy_from_slice(&tag.to_be_bytes());
    }

    /// Sets the checksum field, written big-endian (see [`Self::checksum`]).
    #[inline]
    pub fn set_checksum(&mut self, checksum: u32) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&checksum.to_be_bytes());
    }

    /// The chunks after the common header, mutably.
    #[inline]
    pub fn chunks_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The start of an SCTP packet carrying an INIT to port 36412 (S1AP): ports, zero
    /// verification tag, a checksum, then the INIT chunk header.
    const INIT: [u8; 16] = [
        0x9c, 0x40, 0x8e, 0x3c, // 40000 → 36412
        0x00, 0x00, 0x00, 0x00, // verification tag (0 in INIT)
        0x1c, 0xd2, 0x62, 0x5e, // checksum
        0x01, 0x00, 0x00, 0x14, // INIT chunk, length 20 (rest cut)
    ];

    #[test]
    fn known_answer() {
        let p = SctpPacket::new_checked(&INIT[..]).unwrap();
        assert_eq!(p.src_port(), 40000);
        assert_eq!(p.dst_port(), 36412);
        assert_eq!(p.verification_tag(), 0);
        assert_eq!(p.checksum(), 0x1cd2_625e);
        assert_eq!(p.chunks(), &[0x01, 0x00, 0x00, 0x14]);
    }

    #[test]
    fn truncated_at_every_length() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                SctpPacket::new_checked(&INIT[..len]).err(),
                Some(Malformed::Truncated)
            );
        }
        let p = SctpPacket::new_checked(&INIT[..HEADER_LEN]).unwrap();
        assert!(p.chunks().is_empty());
    }

    #[test]
    fn setters_round_trip() {
        let mut p = SctpPacket::new_checked(INIT).unwrap();
        p.set_src_port(1);
        p.set_dst_port(0xfffe);
        p.set_verification_tag(0xdead_beef);
        p.set_checksum(0x0102_0304);
        p.chunks_mut()[0] = 0x02;
        assert_eq!(
            (
                p.src_port(),
                p.dst_port(),
                p.verification_tag(),
                p.checksum()
            ),
            (1, 0xfffe, 0xdead_beef, 0x0102_0304)
        );
        let bytes = p.into_inner();
        assert_eq!(
            &bytes[..13],
            &[0, 1, 0xff, 0xfe, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 2]
        );
    }
}
