//! Sealed cookie values: AES-256-GCM (aws-lc) under a key ring, so any replica holding
//! the keys opens what another sealed, and no store is shared.
//!
//! A sealed value is `base64url(version ‖ key id ‖ nonce ‖ ciphertext ‖ tag)`. The key id
//! (the first 4 bytes of SHA-256 of the key) picks the key that opens it: the first key
//! of the ring seals, every key opens, so a new key is put first and the old one kept
//! until the longest session has ended, and nobody is signed out by a rotation. The
//! cookie's purpose (`session`, `login`) is the associated data, so a value sealed for one
//! purpose never opens as another.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;

/// Format version: the first byte of every sealed value.
const VERSION: u8 = 1;
const KEY_ID_LEN: usize = 4;
const TAG_LEN: usize = 16;
/// Bytes of a key.
pub const KEY_LEN: usize = 32;

/// Why a key could not be loaded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// The text is not base64 of exactly 32 bytes.
    #[error(
        "a cookie key is 32 random bytes in base64 (`openssl rand -base64 32`); this one is {0}"
    )]
    Malformed(String),
    /// The ring holds no key.
    #[error("at least one cookie key is needed")]
    Empty,
    /// Two keys of the ring share their id (the same key twice).
    #[error("cookie key {0} is listed twice")]
    Duplicate(usize),
}

/// Sealing failed: the system's random number generator gave no nonce.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
#[error("no random nonce for sealing a cookie")]
pub struct SealError;

/// Why a sealed value did not open. Every one of them means: no session.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum OpenError {
    /// Not base64url, or too short to hold a sealed value.
    #[error("not a sealed value")]
    Malformed,
    /// Sealed by a format version this build does not read.
    #[error("sealed in an unknown format")]
    Version,
    /// Sealed by a key not in the ring (another deployment's, or one retired).
    #[error("sealed with a key this server does not have")]
    UnknownKey,
    /// The tag does not check out: changed, truncated or sealed for another purpose.
    #[error("tampered with")]
    Tampered,
}

struct RingKey {
    id: [u8; KEY_ID_LEN],
    key: LessSafeKey,
}

/// The keys cookies are sealed and opened with; the first seals.
pub struct KeyRing {
    keys: Vec<RingKey>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key ids only: they name keys without revealing them.
        let ids: Vec<String> = self
            .keys
            .iter()
            .map(|k| k.id.iter().map(|b| format!("{b:02x}")).collect())
            .collect();
        f.debug_struct("KeyRing").field("key_ids", &ids).finish()
    }
}

impl KeyRing {
    /// A ring from the keys' file contents (base64 of 32 bytes, surrounding whitespace
    /// ignored), the sealing key first.
    pub fn from_base64<S: AsRef<str>>(texts: &[S]) -> Result<Self, KeyError> {
        let keys = texts
            .iter()
            .map(|text| {
                let bytes = STANDARD
                    .decode(text.as_ref().trim())
                    .map_err(|_| KeyError::Malformed("not base64".into()))?;
                let bytes: [u8; KEY_LEN] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| KeyError::Malformed(format!("{} bytes", bytes.len())))?;
                Ok(bytes)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_keys(&keys)
    }

    /// A ring from raw keys, the sealing key first.
    pub fn from_keys(keys: &[[u8; KEY_LEN]]) -> Result<Self, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        let mut ring = Vec::with_capacity(keys.len());
        for (i, bytes) in keys.iter().enumerate() {
            let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
            let mut id = [0; KEY_ID_LEN];
            id.copy_from_slice(&digest.as_ref()[..KEY_ID_LEN]);
            if ring.iter().any(|k: &RingKey| k.id == id) {
                return Err(KeyError::Duplicate(i));
            }
            let key = UnboundKey::new(&AES_256_GCM, bytes)
                .map(LessSafeKey::new)
                .map_err(|_| KeyError::Malformed("refused by AES-256-GCM".into()))?;
            ring.push(RingKey { id, key });
        }
        // aws-lc seeds its generator on first use, 35-45 ms of jitter entropy here: pay
        // it while the config loads, not in the first sign-in's check.
        let _ = aws_lc_rs::rand::fill(&mut [0u8; 1]);
        Ok(KeyRing { keys: ring })
    }

    /// Seals `plaintext` for `purpose` with the first key and a random nonce.
    pub fn seal(&self, purpose: &str, plaintext: &[u8]) -> Result<String, SealError> {
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| SealError)?;
        let mut body = plaintext.to_vec();
        let tag = key
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(purpose.as_bytes()),
                &mut body,
            )
            .map_err(|_| SealError)?;
        let mut out = Vec::with_capacity(1 + KEY_ID_LEN + NONCE_LEN + body.len() + TAG_LEN);
        out.push(VERSION);
        out.extend_from_slice(&key.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        out.extend_from_slice(tag.as_ref());
        Ok(URL_SAFE_NO_PAD.encode(out))
    }

    /// Opens a value [`KeyRing::seal`]ed for `purpose` by any key of the ring.
    pub fn open(&self, purpose: &str, sealed: &str) -> Result<Vec<u8>, OpenError> {
        let mut bytes = URL_SAFE_NO_PAD
            .decode(sealed)
            .map_err(|_| OpenError::Malformed)?;
        if bytes.len() < 1 + KEY_ID_LEN + NONCE_LEN + TAG_LEN {
            return Err(OpenError::Malformed);
        }
        if bytes[0] != VERSION {
            return Err(OpenError::Version);
        }
        let id = &bytes[1..1 + KEY_ID_LEN];
        let key = self
            .keys
            .iter()
            .find(|k| k.id == id)
            .ok_or(OpenError::UnknownKey)?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&bytes[1 + KEY_ID_LEN..1 + KEY_ID_LEN + NONCE_LEN]);
        let body = &mut bytes[1 + KEY_ID_LEN + NONCE_LEN..];
        let plain = key
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(purpose.as_bytes()),
                body,
            )
            .map_err(|_| OpenError::Tampered)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(seeds: &[u8]) -> KeyRing {
        let keys: Vec<[u8; KEY_LEN]> = seeds.iter().map(|s| [*s; KEY_LEN]).collect();
        KeyRing::from_keys(&keys).unwrap()
    }

    #[test]
    fn a_sealed_value_opens_to_what_was_sealed_and_hides_it() {
        let ring = ring(&[1]);
        let sealed = ring.seal("session", b"alice's session").unwrap();
        assert!(!sealed.contains("alice"));
        assert_eq!(ring.open("session", &sealed).unwrap(), b"alice's session");
        // A fresh nonce each time: equal sessions do not look equal.
        assert_ne!(sealed, ring.seal("session", b"alice's session").unwrap());
    }

    #[test]
    fn every_key_of_the_ring_opens_and_only_the_first_seals() {
        let old = ring(&[1]);
        let rotated = ring(&[2, 1]);
        let by_old = old.seal("session", b"x").unwrap();
        assert_eq!(rotated.open("session", &by_old).unwrap(), b"x");
        let by_new = rotated.seal("session", b"y").unwrap();
        assert_eq!(old.open("session", &by_new), Err(OpenError::UnknownKey));
        assert_eq!(ring(&[2]).open("session", &by_new).unwrap(), b"y");
    }

    #[test]
    fn a_retired_or_foreign_key_does_not_open() {
        let sealed = ring(&[1]).seal("session", b"x").unwrap();
        assert_eq!(
            ring(&[3, 4]).open("session", &sealed),
            Err(OpenError::UnknownKey)
        );
    }

    #[test]
    fn a_value_sealed_for_another_purpose_does_not_open() {
        let ring = ring(&[1]);
        let login = ring.seal("login", b"x").unwrap();
        assert_eq!(ring.open("session", &login), Err(OpenError::Tampered));
    }

    #[test]
    fn any_changed_or_missing_byte_is_refused() {
        let ring = ring(&[1]);
        let sealed = ring.seal("session", b"a session of some length").unwrap();
        let raw = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        for i in 0..raw.len() {
            let mut bad = raw.clone();
            bad[i] ^= 0x01;
            let err = ring
                .open("session", &URL_SAFE_NO_PAD.encode(&bad))
                .unwrap_err();
            assert!(
                matches!(
                    err,
                    OpenError::Tampered | OpenError::UnknownKey | OpenError::Version
                ),
                "byte {i}: {err:?}"
            );
        }
        for len in 0..raw.len() {
            let cut = URL_SAFE_NO_PAD.encode(&raw[..len]);
            assert!(ring.open("session", &cut).is_err(), "cut at {len}");
        }
        let mut longer = raw.clone();
        longer.push(0);
        assert!(ring
            .open("session", &URL_SAFE_NO_PAD.encode(&longer))
            .is_err());
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let ring = ring(&[1]);
        for garbage in ["", "%%%", "a", "AAAA", &"A".repeat(10_000), "é"] {
            assert!(ring.open("session", garbage).is_err(), "{garbage:?}");
        }
    }

    #[test]
    fn keys_are_base64_of_32_bytes_and_a_ring_needs_one_distinct_key_at_least() {
        let good = STANDARD.encode([7u8; 32]);
        assert!(KeyRing::from_base64(&[format!("  {good}\n")]).is_ok());
        assert!(matches!(
            KeyRing::from_base64(&[STANDARD.encode([7u8; 16])]),
            Err(KeyError::Malformed(m)) if m == "16 bytes"
        ));
        assert!(matches!(
            KeyRing::from_base64(&["not base64!"]),
            Err(KeyError::Malformed(_))
        ));
        assert_eq!(
            KeyRing::from_base64::<&str>(&[]).unwrap_err(),
            KeyError::Empty
        );
        assert_eq!(
            KeyRing::from_base64(&[good.clone(), good]).unwrap_err(),
            KeyError::Duplicate(1)
        );
    }

    #[test]
    fn debug_output_names_keys_by_id_only() {
        let ring = ring(&[9]);
        let shown = format!("{ring:?}");
        assert!(shown.contains("key_ids"));
        assert!(!shown.contains("09090909"));
    }
}
