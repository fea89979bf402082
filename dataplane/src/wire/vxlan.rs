//! The VXLAN header (RFC 7348 §5), carried in UDP to port 4789, followed by the inner
//! Ethernet frame.
//!
//! RFC 7348 §5, "VXLAN Frame Format":
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |R|R|R|R|I|R|R|R|            Reserved                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! > Flags (8 bits): where the I flag MUST be set to 1 for a valid VXLAN Network ID (VNI).
//! > The other 7 bits (designated "R") are reserved fields and MUST be set to zero on
//! > transmission and ignored on receipt.
//!
//! So [`VxlanPacket::new_checked`] refuses a header without the I flag
//! ([`Malformed::BadField`]) and ignores the reserved bits, as required; that also lets
//! extensions that use them (VXLAN-GBP's group policy ID) through.
//! [`VxlanPacket::write_header`] writes them as zero.
//!
//! smoltcp has no VXLAN, hence this module. Once [`VxlanPacket::new_checked`] has returned
//! `Ok`, no accessor panics.

use super::Malformed;

/// The IANA-assigned UDP destination port. RFC 7348 §5: "IANA has assigned the value 4789
/// for the VXLAN UDP port, and this value SHOULD be used by default as the destination UDP
/// port."
pub const PORT: u16 = 4789;
/// Length of the VXLAN header.
pub const HEADER_LEN: usize = 8;
/// The I flag: the VNI is valid.
pub const FLAG_I: u8 = 0x08;
/// The largest VNI (24 bits).
pub const MAX_VNI: u32 = 0x00ff_ffff;

/// Byte offsets in the VXLAN header.
pub mod field {
    use core::ops::Range;

    /// Flags: `RRRRIRRR`.
    pub const FLAGS: usize = 0;
    /// Reserved, 24 bits.
    pub const RESERVED1: Range<usize> = 1..4;
    /// VXLAN Network Identifier, 24 bits.
    pub const VNI: Range<usize> = 4..7;
    /// Reserved, 8 bits.
    pub const RESERVED2: usize = 7;
}

/// A read/write view of a VXLAN packet: the header and the inner Ethernet frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VxlanPacket<T> {
    /// Wraps a buffer without checking it. Accessors may panic on a buffer shorter than
    /// [`HEADER_LEN`]; use [`Self::new_checked`] for bytes from the wire.
    pub const fn new_unchecked(buffer: T) -> Self {
        VxlanPacket { buffer }
    }

    /// Wraps a buffer after checking that the header fits and has the I flag.
    ///
    /// # Errors
    ///
    /// - [`Malformed::Truncated`] if the buffer is shorter than [`HEADER_LEN`].
    /// - [`Malformed::BadField`] if the I flag is clear.
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let packet = Self::new_unchecked(buffer);
        packet.check()?;
        Ok(packet)
    }

    /// Checks the length and the I flag.
    ///
    /// # Errors
    ///
    /// As [`Self::new_checked`].
    pub fn check(&self) -> Result<(), Malformed> {
        if self.buffer.as_ref().len() < HEADER_LEN {
            Err(Malformed::Truncated)
        } else if self.flags() & FLAG_I == 0 {
            Err(Malformed::BadField)
        } else {
            Ok(())
        }
    }

    /// Unwraps the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The flags byte, reserved bits included.
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// The 24-bit VXLAN Network Identifier.
    #[inline]
    pub fn vni(&self) -> u32 {
        let b = &self.buffer.as_ref()[field::VNI];
        u32::from_be_bytes([0, b[0], b[1], b[2]])
    }

    /// The inner Ethernet frame.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VxlanPacket<T> {
    /// Writes a whole header: the I flag, the VNI, every reserved bit zero.
    ///
    /// # Panics
    ///
    /// If `vni` does not fit in 24 bits.
    #[inline]
    pub fn write_header(&mut self, vni: u32) {
        let b = self.buffer.as_mut();
        b[field::FLAGS] = FLAG_I;
        b[field::RESERVED1].fill(0);
        b[field::RESERVED2] = 0;
        self.set_vni(vni);
    }

    /// Sets the flags byte.
    #[inline]
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[field::FLAGS] = flags;
    }

    /// Sets the VNI, leaving the reserved byte after it alone.
    ///
    /// # Panics
    ///
    /// If `vni` does not fit in 24 bits.
    #[inline]
    pub fn set_vni(&mut self, vni: u32) {
        assert!(vni <= MAX_VNI, "VNI is 24 bits, got {vni:#x}");
        self.buffer.as_mut()[field::VNI].copy_from_slice(&vni.to_be_bytes()[1..]);
    }

    /// The inner Ethernet frame, mutably.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header as Linux's vxlan driver sends it for VNI 42, with the start of an inner
    /// Ethernet frame.
    const PACKET: [u8; 10] = [0x08, 0, 0, 0, 0x00, 0x00, 0x2a, 0, 0xff, 0xff];

    #[test]
    fn known_answer() {
        let p = VxlanPacket::new_checked(&PACKET[..]).unwrap();
        assert_eq!(p.flags(), FLAG_I);
        assert_eq!(p.vni(), 42);
        assert_eq!(p.payload(), &[0xff, 0xff]);
    }

    #[test]
    fn truncated_at_every_length() {
        for len in 0..HEADER_LEN {
            assert_eq!(
                VxlanPacket::new_checked(&PACKET[..len]).err(),
                Some(Malformed::Truncated)
            );
        }
        assert!(VxlanPacket::new_checked(&PACKET[..HEADER_LEN])
            .unwrap()
            .payload()
            .is_empty());
    }

    #[test]
    fn i_flag_is_required() {
        let mut bytes = PACKET;
        bytes[0] = 0x00;
        assert_eq!(
            VxlanPacket::new_checked(&bytes[..]).err(),
            Some(Malformed::BadField)
        );
        bytes[0] = 0xf7;
        assert_eq!(
            VxlanPacket::new_checked(&bytes[..]).err(),
            Some(Malformed::BadField)
        );
    }

    #[test]
    fn reserved_bits_are_ignored_on_receipt() {
        // VXLAN-GBP: G bit (0x80) and a group policy ID in the first reserved field.
        let bytes = [0x88, 0x00, 0x12, 0x34, 0xab, 0xcd, 0xef, 0x99];
        let p = VxlanPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.vni(), 0xab_cdef);
    }

    #[test]
    fn setters_round_trip() {
        let mut p = VxlanPacket::new_unchecked([0xffu8; 9]);
        p.write_header(MAX_VNI);
        assert_eq!(p.vni(), MAX_VNI);
        p.set_vni(7);
        assert!(p.check().is_ok());
        assert_eq!(p.vni(), 7);
        p.payload_mut()[0] = 1;
        p.set_flags(0x0c);
        assert_eq!(p.into_inner(), [0x0c, 0, 0, 0, 0, 0, 7, 0, 1]);
    }

    #[test]
    #[should_panic(expected = "VNI is 24 bits")]
    fn vni_out_of_range_panics() {
        VxlanPacket::new_unchecked([0u8; 8]).set_vni(1 << 24);
    }
}
