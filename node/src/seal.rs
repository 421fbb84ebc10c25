//! Personal data sealed at rest (issue 16): a holder's name and phone are encrypted at the API
//! with the site's data key (XChaCha20-Poly1305), before the command is proposed, so the Raft log, the state, snapshots and backups carry only ciphertext; the API
//! opens them again for the reads that show them. Every node holds the same key (its
//! `--data-key-file`), since any node may serve the read. The ID number is stored masked
//! (`110***********1234`) and the person key is a hash: neither is sealed.
//!
//! The nonce is synthetic: a keyed hash of the request (terminal and request id), the field and
//! the plain value. A retry of the same request seals to the same bytes, so it is recognised as
//! a retry (a random nonce made every retry look like another payload under the same id); two
//! different values never share a nonce; and equal names of different requests still seal
//! differently.

use std::path::Path;

use anyhow::{Context, Result, bail};
use chacha20poly1305::aead::{Aead, KeyInit, OsRng};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};
use yinyi_ledger::SEALED_PREFIX;

/// Bytes of a data key (hex in its file: 64 characters).
pub const KEY_BYTES: usize = 32;

/// Seals and opens personal data with the site's key.
pub struct Sealer {
    cipher: XChaCha20Poly1305,
    /// Keys the synthetic nonces (derived from the data key, never used to encrypt).
    nonce_key: [u8; 32],
}

impl Sealer {
    /// The key in `path`: 64 hex characters (whitespace around them ignored).
    pub fn from_file(path: &Path) -> Result<Sealer> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read the data key {}", path.display()))?;
        let bytes = hex::decode(text.trim())
            .with_context(|| format!("the data key {} is not hex", path.display()))?;
        if bytes.len() != KEY_BYTES {
            bail!(
                "the data key {} has {} bytes; it must have {KEY_BYTES} (64 hex characters)",
                path.display(),
                bytes.len()
            );
        }
        let mut nonce_key = Sha256::new();
        nonce_key.update(b"yinyi seal nonce key v1");
        nonce_key.update(&bytes);
        Ok(Sealer {
            cipher: XChaCha20Poly1305::new(Key::from_slice(&bytes)),
            nonce_key: nonce_key.finalize().into(),
        })
    }

    /// A new random key, as its file holds it.
    pub fn new_key_hex() -> String {
        hex::encode(XChaCha20Poly1305::generate_key(&mut OsRng))
    }

    /// `plain` sealed for `context` (the request and field it belongs to): `sealed:v1:` then
    /// hex of nonce and ciphertext. Empty stays empty.
    pub fn seal(&self, context: &str, plain: &str) -> String {
        if plain.is_empty() {
            return String::new();
        }
        let mut hash = Sha256::new();
        hash.update(self.nonce_key);
        for part in [context, plain] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        let digest = hash.finalize();
        let nonce = XNonce::from_slice(&digest[..24]);
        let sealed = self
            .cipher
            .encrypt(nonce, plain.as_bytes())
            .expect("XChaCha20-Poly1305 seals any message of this size");
        let mut bytes = nonce.to_vec();
        bytes.extend_from_slice(&sealed);
        format!("{SEALED_PREFIX}{}", hex::encode(bytes))
    }

    /// The value `seal` sealed; a value stored before sealing was turned on is returned as it
    /// is. One this key cannot open (another site's, or damaged) reads as `[sealed]`.
    pub fn open(&self, stored: &str) -> String {
        let Some(body) = stored.strip_prefix(SEALED_PREFIX) else {
            return stored.to_string();
        };
        let opened = hex::decode(body).ok().and_then(|bytes| {
            if bytes.len() < 24 {
                return None;
            }
            let (nonce, sealed) = bytes.split_at(24);
            let plain = self
                .cipher
                .decrypt(XNonce::from_slice(nonce), sealed)
                .ok()?;
            String::from_utf8(plain).ok()
        });
        opened.unwrap_or_else(|| {
            tracing::error!("a sealed value does not open with this node's data key");
            metrics::counter!("sealed_values_unopened_total").increment(1);
            "[sealed]".to_string()
        })
    }
}

/// What a reply shows of a stored value: opened with the key, or as stored without one (a
/// sealed value then reads `[sealed]`).
pub fn show(sealer: Option<&Sealer>, stored: &str) -> String {
    match sealer {
        Some(sealer) => sealer.open(stored),
        None if stored.starts_with(SEALED_PREFIX) => "[sealed]".to_string(),
        None => stored.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> Sealer {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.key");
        std::fs::write(&path, Sealer::new_key_hex()).unwrap();
        Sealer::from_file(&path).unwrap()
    }

    #[test]
    fn a_sealed_value_opens_with_its_key_only_and_never_shows_the_plain_text() {
        let a = sealer();
        let b = sealer();
        let sealed = a.seal("K-01/r1/name", "张三丰");
        assert!(sealed.starts_with(SEALED_PREFIX));
        assert!(!sealed.contains("张三丰"));
        // A retry seals to the same bytes; another request or another value does not.
        assert_eq!(sealed, a.seal("K-01/r1/name", "张三丰"));
        assert_ne!(sealed, a.seal("K-01/r2/name", "张三丰"));
        assert_ne!(sealed, a.seal("K-01/r1/name", "张三"));
        assert_ne!(sealed, b.seal("K-01/r1/name", "张三丰"));
        assert_eq!(a.open(&sealed), "张三丰");
        assert_eq!(b.open(&sealed), "[sealed]");
        assert_eq!(a.open("stored before sealing"), "stored before sealing");
        assert_eq!(a.seal("K-01/r1/phone", ""), "");
        assert_eq!(show(None, &sealed), "[sealed]");
        let mut damaged = sealed.clone();
        damaged.replace_range(sealed.len() - 2.., "00");
        assert_eq!(a.open(&damaged), "[sealed]");
    }

    #[test]
    fn a_key_file_of_the_wrong_size_or_not_hex_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for text in ["abcd", "zz", ""] {
            let path = dir.path().join("bad.key");
            std::fs::write(&path, text).unwrap();
            assert!(Sealer::from_file(&path).is_err(), "{text:?}");
        }
    }
}
