//! API keys: generation from the operating system's CSPRNG, hashing, and verification.
//!
//! A key is `tk_` followed by 256 random bits in URL-safe base64. Only its SHA-256 (hex)
//! and a short display prefix are stored; the key is shown once and never logged.

use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Random bytes in a key (256 bits; the contract asks for at least 128).
const KEY_BYTES: usize = 32;
/// Characters of the key kept for display, including the `tk_` marker.
const PREFIX_CHARS: usize = 10;

/// A freshly generated key. `Debug` hides the secret.
pub struct ApiKey {
    secret: String,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKey({}…)", self.prefix())
    }
}

impl ApiKey {
    /// Generates a key from the OS CSPRNG.
    pub fn generate() -> Result<ApiKey, crate::error::Error> {
        let mut bytes = [0u8; KEY_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| {
            crate::error::Error::failed(format!("the operating system's random source failed: {e}"))
        })?;
        let secret = format!(
            "tk_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        );
        Ok(ApiKey { secret })
    }

    /// The key itself: show it once, store it nowhere.
    pub fn reveal(&self) -> &str {
        &self.secret
    }

    /// The display prefix stored in the registry.
    pub fn prefix(&self) -> String {
        self.secret.chars().take(PREFIX_CHARS).collect()
    }

    /// The hash stored in the registry.
    pub fn hash(&self) -> String {
        hash(&self.secret)
    }
}

/// SHA-256 of a presented key, lowercase hex: what `api_key_hash` holds.
pub fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Checks a presented key against a stored hash in constant time.
pub fn verify(presented: &str, stored_hash: &str) -> bool {
    hash(presented)
        .as_bytes()
        .ct_eq(stored_hash.as_bytes())
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_long_random_and_hash_to_hex() {
        let a = ApiKey::generate().unwrap();
        let b = ApiKey::generate().unwrap();
        assert_ne!(a.reveal(), b.reveal());
        assert!(a.reveal().starts_with("tk_"));
        assert_eq!(a.reveal().len(), 3 + 43);
        assert_eq!(a.hash().len(), 64);
        assert!(a
            .hash()
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert!(a.reveal().starts_with(&a.prefix()));
        assert!(!format!("{a:?}").contains(a.reveal()));
    }

    #[test]
    fn hash_matches_sha256_and_verify_is_exact() {
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let k = ApiKey::generate().unwrap();
        assert!(verify(k.reveal(), &k.hash()));
        assert!(!verify(&format!("{}x", k.reveal()), &k.hash()));
        assert!(!verify(k.reveal(), "short"));
    }
}
