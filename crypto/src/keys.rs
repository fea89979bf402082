//! WireGuard keys as weir handles them: the node's static secret (never printed: its
//! `Debug` is redacted) and public keys in WireGuard's base64 text form, as `wg` prints them
//! and as nodes publish them (annotation `weir.dev/wireguard-public-key`).
//!
//! Making a key needs 32 random bytes; this crate takes them from the caller (the agent
//! reads them from the operating system), so that it never touches a random source itself.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use boringtun::x25519::{PublicKey, StaticSecret};

/// Why a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not base64: {0}")]
    NotBase64(String),
    #[error("a WireGuard key is 32 bytes, this one is {0}")]
    WrongLength(usize),
    #[error("the all-zero key is not a usable public key")]
    Zero,
}

/// The node's static key pair.
#[derive(Clone)]
pub struct NodeKey {
    secret: StaticSecret,
    public: PublicKey,
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeKey")
            .field("public", &encode(self.public.as_bytes()))
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl NodeKey {
    /// A key from 32 secret bytes (clamped by X25519 as usual).
    pub fn from_bytes(bytes: [u8; 32]) -> NodeKey {
        let secret = StaticSecret::from(bytes);
        let public = PublicKey::from(&secret);
        NodeKey { secret, public }
    }

    /// A key from its base64 text (a key file's content, surrounding whitespace ignored).
    pub fn from_base64(text: &str) -> Result<NodeKey, KeyError> {
        Ok(NodeKey::from_bytes(decode32(text)?))
    }

    /// The secret as base64, for the key file only.
    pub fn secret_base64(&self) -> String {
        encode(&self.secret.to_bytes())
    }

    /// The public key.
    pub fn public(&self) -> PublicKey {
        self.public
    }

    /// The public key as base64 (what `wg pubkey` prints).
    pub fn public_base64(&self) -> String {
        encode(self.public.as_bytes())
    }

    pub(crate) fn secret(&self) -> &StaticSecret {
        &self.secret
    }
}

/// Parses a public key from base64.
pub fn parse_public(text: &str) -> Result<PublicKey, KeyError> {
    let bytes = decode32(text)?;
    if bytes == [0u8; 32] {
        return Err(KeyError::Zero);
    }
    Ok(PublicKey::from(bytes))
}

/// A public key as base64.
pub fn format_public(key: &PublicKey) -> String {
    encode(key.as_bytes())
}

fn encode(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

fn decode32(text: &str) -> Result<[u8; 32], KeyError> {
    let raw = STANDARD
        .decode(text.trim())
        .map_err(|e| KeyError::NotBase64(e.to_string()))?;
    <[u8; 32]>::try_from(raw.as_slice()).map_err(|_| KeyError::WrongLength(raw.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_through_base64_and_the_secret_never_shows_in_debug() {
        let key = NodeKey::from_bytes([7; 32]);
        let again = NodeKey::from_base64(&format!("  {}\n", key.secret_base64())).unwrap();
        assert_eq!(again.public_base64(), key.public_base64());
        let public = parse_public(&key.public_base64()).unwrap();
        assert_eq!(public, key.public());
        assert_eq!(format_public(&public), key.public_base64());
        let shown = format!("{key:?}");
        assert!(shown.contains("redacted"));
        assert!(!shown.contains(&key.secret_base64()));
    }

    #[test]
    fn bad_keys_are_refused_with_a_reason() {
        assert!(matches!(
            parse_public("not base64!"),
            Err(KeyError::NotBase64(_))
        ));
        assert_eq!(parse_public("AAAA"), Err(KeyError::WrongLength(3)));
        assert_eq!(
            parse_public(&STANDARD.encode([0u8; 32])),
            Err(KeyError::Zero)
        );
    }

    #[test]
    fn the_public_key_matches_the_reference_derivation() {
        // RFC 7748 section 6.1: Alice's private key and public key.
        let secret: [u8; 32] = [
            0x77, 0x07, 0x6d, 0x0a, 0x73, 0x18, 0xa5, 0x7d, 0x3c, 0x16, 0xc1, 0x72, 0x51, 0xb2,
            0x66, 0x45, 0xdf, 0x4c, 0x2f, 0x87, 0xeb, 0xc0, 0x99, 0x2a, 0xb1, 0x77, 0xfb, 0xa5,
            0x1d, 0xb9, 0x2c, 0x2a,
        ];
        let public: [u8; 32] = [
            0x85, 0x20, 0xf0, 0x09, 0x89, 0x30, 0xa7, 0x54, 0x74, 0x8b, 0x7d, 0xdc, 0xb4, 0x3e,
            0xf7, 0x5a, 0x0d, 0xbf, 0x3a, 0x0d, 0x26, 0x38, 0x1a, 0xf4, 0xeb, 0xa4, 0xa9, 0x8e,
            0xaa, 0x9b, 0x4e, 0x6a,
        ];
        assert_eq!(NodeKey::from_bytes(secret).public().as_bytes(), &public);
    }
}
