//! API keys: how they are stored (hashed) and looked up.
//!
//! Keys are high-entropy random strings, so a fast keyed-free hash is the right tool (as GitHub
//! and Stripe store tokens): BLAKE3 of the key bytes, written `blake3:<64 hex>`. The config only
//! ever holds hashes; the raw key exists in memory for the duration of one lookup and is never
//! logged.

use std::fmt;

use rand::RngCore;

/// The stored form of an API key.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct KeyHash([u8; 32]);

const PREFIX: &str = "blake3:";

impl KeyHash {
    /// Hash a raw key as presented by a client.
    pub fn of(raw_key: &str) -> KeyHash {
        KeyHash(*blake3::hash(raw_key.as_bytes()).as_bytes())
    }

    /// Parse the `blake3:<hex>` form used in config files.
    pub fn parse(s: &str) -> Result<KeyHash, String> {
        let Some(hex_part) = s.strip_prefix(PREFIX) else {
            return Err(format!(
                "expected \"{PREFIX}<64 hex digits>\" (make one with `warden keys hash`); raw keys never go in the config"
            ));
        };
        let mut out = [0u8; 32];
        hex::decode_to_slice(hex_part, &mut out)
            .map_err(|_| "expected 64 hex digits after \"blake3:\"".to_string())?;
        Ok(KeyHash(out))
    }
}

impl fmt::Display for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", hex::encode(self.0))
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A hash is not secret, but keep debug output short.
        write!(f, "KeyHash({}…)", &hex::encode(&self.0[..4]))
    }
}

/// A new random key in the usual `sk-...` shape (32 random bytes, hex).
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("sk-warden-{}", hex::encode(bytes))
}

/// Extract the bearer token from an `Authorization` header value.
pub fn bearer(header: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(header).ok()?;
    let (scheme, token) = s.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = KeyHash::of("sk-test");
        assert_eq!(KeyHash::parse(&h.to_string()).unwrap(), h);
        assert!(KeyHash::parse("sk-test").is_err());
        assert!(KeyHash::parse("blake3:zz").is_err());
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer(b"Bearer sk-1"), Some("sk-1"));
        assert_eq!(bearer(b"bearer  sk-1 "), Some("sk-1"));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"\xff\xfe"), None);
    }

    #[test]
    fn generated_keys_differ_and_do_not_leak_via_debug() {
        let (a, b) = (generate(), generate());
        assert_ne!(a, b);
        assert!(a.starts_with("sk-warden-"));
        assert!(!format!("{:?}", KeyHash::of(&a)).contains(&a));
    }
}
