//! Opaque random secrets and their stored hashes.
//!
//! Tokens are 256 random bits, so a fast hash (SHA-256) is enough to make a leaked
//! database useless; slow password hashing is only needed for human passwords.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// A new random secret with a readable prefix, e.g. `ent_admin_4f1c…`.
pub fn new_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}_{}", hex::encode(bytes))
}

/// The hash under which a secret is stored and looked up.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_unique_and_hashes_stable() {
        let a = new_secret("ent_admin");
        let b = new_secret("ent_admin");
        assert_ne!(a, b);
        assert!(a.starts_with("ent_admin_") && a.len() == "ent_admin_".len() + 64);
        assert_eq!(hash_secret(&a), hash_secret(&a));
        assert_ne!(hash_secret(&a), hash_secret(&b));
        assert!(!hash_secret(&a).contains(&a));
    }
}
