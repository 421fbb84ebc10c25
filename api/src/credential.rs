//! Credentials as clients hold them, `ID:SECRET`, sent as `authorization: Bearer ID:SECRET`.
//! The cluster keeps only the secret's SHA-256; a secret is 32 random bytes, so a plain hash
//! is enough (nothing to guess from it).

use sha2::{Digest, Sha256};

/// A fresh secret: 32 random bytes as 64 hex digits.
pub fn new_secret() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// The lowercase hex SHA-256 of a secret, as the cluster stores it.
pub fn secret_sha256(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A node config's bootstrap credential, `ID:ROLES:SHA256`, for a credential `ID:SECRET`
/// with `roles` (names joined by `+`).
pub fn bootstrap_entry(credential: &str, roles: &str) -> String {
    let (id, secret) = credential.split_once(':').unwrap_or((credential, ""));
    format!("{id}:{roles}:{}", secret_sha256(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_fresh_and_hashes_are_stable() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
        assert_eq!(
            secret_sha256("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            bootstrap_entry("ops:abc", "admin"),
            format!("ops:admin:{}", secret_sha256("abc"))
        );
    }
}
