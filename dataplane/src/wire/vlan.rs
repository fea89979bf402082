//! IEEE 802.1Q VLAN tags, and finding L3 behind up to two of them (802.1ad QinQ).
//!
//! A tag sits between the source MAC address and the EtherType of an Ethernet frame. The
//! TPID (0x8100 for a customer tag, 0x88a8 for an 802.1ad service tag) takes the place of
//! the EtherType; the four bytes that follow are the tag proper, and the view here covers
//! those four (IEEE 802.1Q-2018 §9.6, "VLAN Tag Control Information"):
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | PCP |D|         VID           |      EtherType (inner)        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! PCP is the 3-bit priority code point, D the drop eligible indicator (DEI), VID the
//! 12-bit VLAN identifier.
//!
//! smoltcp has no VLAN support, hence this module. [`l3_offset`] is what the input stage
//! needs: where the L3 header starts, what it is, and which VLAN the frame arrived on. It
//! accepts at most two tags: a third is not a frame we forward (QinQ is the deepest
//! stacking a Kubernetes node sees) and is reported as [`Malformed::BadField`].
//!
//! Once [`VlanTag::new_checked`] has returned `Ok`, no accessor panics.

use super::Malformed;

/// TPID of an IEEE 802.1Q customer VLAN tag (C-tag).
pub const TPID_8021Q: u16 = 0x8100;
/// TPID of an IEEE 802.1ad service VLAN tag (S-tag, the outer tag of QinQ).
pub const TPID_8021AD: u16 = 0x88a8;
/// Length of the tag after the TPID: TCI and inner EtherType.
pub const HEADER_LEN: usize = field::ETHERTYPE.end;
/// Length of an untagged Ethernet II header: two MAC addresses and an EtherType.
pub const ETHERNET_HEADER_LEN: usize = 14;

/// Byte offsets inside the tag (after the TPID).
pub mod field {
    use core::ops::Range;

    /// Tag control information: PCP (3 bits), DEI (1 bit), VID (12 bits).
    pub const TCI: Range<usize> = 0..2;
    /// EtherType of what follows the tag.
    pub const ETHERTYPE: Range<usize> = 2..4;
}

/// A read/write view of the four bytes of an 802.1Q tag that follow its TPID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VlanTag<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VlanTag<T> {
    /// Wraps a buffer without checking its length. Accessors may panic on a buffer shorter
    /// than [`HEADER_LEN`]; use [`Self::new_checked`] for bytes from the wire.
    pub const fn new_unchecked(buffer: T) -> Self {
        VlanTag { buffer }
    }

    /// Wraps a buffer after checking that the tag fits.
    ///
    /// # Errors
    ///
    /// [`Malformed::Truncated`] if the buffer is shorter than [`HEADER_LEN`].
    pub fn new_checked(buffer: T) -> Result<Self, Malformed> {
        let tag = Self::new_unchecked(buffer);
        tag.check_len()?;
        Ok(tag)
    }

    /// Checks that the buffer holds a whole tag.
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

    /// The whole tag control information field.
    #[inline]
    pub fn tci(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[field::TCI.start], b[field::TCI.start + 1]])
    }

    /// Priority code point (IEEE 802.1p class), 0–7.
    #[inline]
    pub fn pcp(&self) -> u8 {
        (self.tci() >> 13) as u8
    }

    /// Drop eligible indicator.
    #[inline]
    pub fn dei(&self) -> bool {
        self.tci() & 0x1000 != 0
    }

    /// VLAN identifier, 0–4095. 0 means a priority tag (no VLAN), 4095 is reserved.
    #[inline]
    pub fn vid(&self) -> u16 {
        self.tci() & 0x0fff
    }

    /// EtherType of what follows the tag (another TPID for stacked tags).
    #[inline]
    pub fn ethertype(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[field::ETHERTYPE.start], b[field::ETHERTYPE.start + 1]])
    }

    /// What follows the tag.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VlanTag<T> {
    /// Sets the whole tag control information field.
    #[inline]
    pub fn set_tci(&mut self, tci: u16) {
        self.buffer.as_mut()[field::TCI].copy_from_slice(&tci.to_be_bytes());
    }

    /// Sets the priority code point.
    ///
    /// # Panics
    ///
    /// If `pcp` does not fit in 3 bits.
    #[inline]
    pub fn set_pcp(&mut self, pcp: u8) {
        assert!(pcp <= 7, "PCP is 3 bits, got {pcp}");
        let tci = (self.tci() & 0x1fff) | (u16::from(pcp) << 13);
        self.set_tci(tci);
    }

    /// Sets the drop eligible indicator.
    #[inline]
    pub fn set_dei(&mut self, dei: bool) {
        let tci = (self.tci() & !0x1000) | if dei { 0x1000 } else { 0 };
        self.set_tci(tci);
    }

    /// Sets the VLAN identifier.
    ///
    /// # Panics
    ///
    /// If `vid` does not fit in 12 bits.
    #[inline]
    pub fn set_vid(&mut self, vid: u16) {
        assert!(vid <= 0x0fff, "VID is 12 bits, got {vid:#x}");
        let tci = (self.tci() & 0xf000) | vid;
        self.set_tci(tci);
    }

    /// Sets the EtherType of what follows the tag.
    #[inline]
    pub fn set_ethertype(&mut self, ethertype: u16) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&ethertype.to_be_bytes());
    }

    /// What follows the tag, mutably.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// Reads an Ethernet II header and up to two VLAN tags.
///
/// Returns the EtherType of the L3 header, its offset from the start of the frame (14, 18
/// or 22), and the VID of the outermost tag if there is one. Both TPIDs
/// ([`TPID_8021Q`], [`TPID_8021AD`]) are accepted in either position; the EtherType is
/// returned as found, so an 802.3 length (< 0x0600) is the caller's to reject.
///
/// # Errors
///
/// - [`Malformed::Truncated`] if the frame ends inside the Ethernet header or a tag.
/// - [`Malformed::BadField`] if a third tag follows two.
pub fn l3_offset(frame: &[u8]) -> Result<(u16, usize, Option<u16>), Malformed> {
    let mut ethertype = read_u16(frame, ETHERNET_HEADER_LEN - 2)?;
    let mut offset = ETHERNET_HEADER_LEN;
    let mut outer_vid = None;
    for _ in 0..2 {
        if !is_tpid(ethertype) {
            return Ok((ethertype, offset, outer_vid));
        }
        let tag = frame.get(offset..).ok_or(Malformed::Truncated)?;
        let tag = VlanTag::new_checked(tag)?;
        outer_vid.get_or_insert(tag.vid());
        ethertype = tag.ethertype();
        offset += HEADER_LEN;
    }
    if is_tpid(ethertype) {
        return Err(Malformed::BadField);
    }
    Ok((ethertype, offset, outer_vid))
}

fn is_tpid(ethertype: u16) -> bool {
    ethertype == TPID_8021Q || ethertype == TPID_8021AD
}

fn read_u16(b: &[u8], at: usize) -> Result<u16, Malformed> {
    match b.get(at..at + 2) {
        Some(&[hi, lo]) => Ok(u16::from_be_bytes([hi, lo])),
        _ => Err(Malformed::Truncated),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DST: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
    const SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

    fn frame(tags: &[(u16, u16)], ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&DST);
        f.extend_from_slice(&SRC);
        for &(tpid, tci) in tags {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&tci.to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn known_answer_tag() {
        // PCP 5, DEI 1, VID 0x123, inner IPv4.
        let bytes = [0xb1, 0x23, 0x08, 0x00];
        let tag = VlanTag::new_checked(&bytes[..]).unwrap();
        assert_eq!(tag.pcp(), 5);
        assert!(tag.dei());
        assert_eq!(tag.vid(), 0x123);
        assert_eq!(tag.ethertype(), 0x0800);
        assert_eq!(tag.tci(), 0xb123);
        assert!(tag.payload().is_empty());
    }

    #[test]
    fn truncated_at_every_length() {
        let bytes = [0xb1, 0x23, 0x08, 0x00];
        for len in 0..HEADER_LEN {
            assert_eq!(
                VlanTag::new_checked(&bytes[..len]).err(),
                Some(Malformed::Truncated)
            );
        }
    }

    #[test]
    fn setters_round_trip() {
        let mut tag = VlanTag::new_checked([0u8; 6]).unwrap();
        tag.set_pcp(7);
        tag.set_dei(true);
        tag.set_vid(0xfff);
        tag.set_ethertype(0x86dd);
        assert_eq!(
            (tag.pcp(), tag.dei(), tag.vid(), tag.ethertype()),
            (7, true, 0xfff, 0x86dd)
        );
        tag.set_vid(42);
        assert_eq!((tag.pcp(), tag.dei(), tag.vid()), (7, true, 42));
        tag.set_dei(false);
        tag.set_pcp(1);
        assert_eq!((tag.pcp(), tag.dei(), tag.vid()), (1, false, 42));
        tag.payload_mut()[0] = 9;
        assert_eq!(tag.into_inner(), [0x20, 42, 0x86, 0xdd, 9, 0]);
    }

    #[test]
    #[should_panic(expected = "VID is 12 bits")]
    fn vid_out_of_range_panics() {
        VlanTag::new_unchecked([0u8; 4]).set_vid(0x1000);
    }

    #[test]
    #[should_panic(expected = "PCP is 3 bits")]
    fn pcp_out_of_range_panics() {
        VlanTag::new_unchecked([0u8; 4]).set_pcp(8);
    }

    #[test]
    fn untagged() {
        let f = frame(&[], 0x0800, &[0x45]);
        assert_eq!(l3_offset(&f), Ok((0x0800, 14, None)));
    }

    #[test]
    fn single_tag() {
        let f = frame(&[(TPID_8021Q, 0x2064)], 0x86dd, &[]);
        assert_eq!(l3_offset(&f), Ok((0x86dd, 18, Some(100))));
    }

    #[test]
    fn qinq_reports_outer_vid() {
        let f = frame(
            &[(TPID_8021AD, 0x0007), (TPID_8021Q, 0x0064)],
            0x0806,
            &[0; 28],
        );
        assert_eq!(l3_offset(&f), Ok((0x0806, 22, Some(7))));
        let f = frame(&[(TPID_8021Q, 0x0007), (TPID_8021Q, 0x0064)], 0x0800, &[]);
        assert_eq!(l3_offset(&f), Ok((0x0800, 22, Some(7))));
    }

    #[test]
    fn third_tag_is_refused() {
        let f = frame(
            &[(TPID_8021AD, 1), (TPID_8021Q, 2), (TPID_8021Q, 3)],
            0x0800,
            &[],
        );
        assert_eq!(l3_offset(&f), Err(Malformed::BadField));
    }

    #[test]
    fn frames_truncated_at_every_length() {
        for tags in [
            &[][..],
            &[(TPID_8021Q, 5)][..],
            &[(TPID_8021AD, 5), (TPID_8021Q, 6)][..],
        ] {
            let f = frame(tags, 0x0800, &[]);
            assert!(l3_offset(&f).is_ok());
            for len in 0..f.len() {
                assert_eq!(l3_offset(&f[..len]), Err(Malformed::Truncated), "len {len}");
            }
        }
    }
}
