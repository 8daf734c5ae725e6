//! Keyed prompt identity: who sent what, without storing what.
//!
//! Role: audit rows identify prompts, system prompts, messages and client addresses by keyed
//! BLAKE3 hashes. Someone holding the key and a candidate text can check whether that text was
//! sent ("did anyone send X?"); someone holding only the lake cannot recover or brute-force the
//! text, not even for low-entropy inputs like IPv4 addresses.
//!
//! Output: [`KeyedHash`], the full 256-bit BLAKE3 output: 32 bytes in the lake (half the size of
//! hex text), 64 lowercase hex digits when displayed. The key that
//! produced it is recorded beside it in the `hash_key_id` column.
//!
//! Domains: each kind of input is hashed under its own domain (`prompt`, `system`, `message`,
//! `client`), with length-prefixed fields, so a message hash never equals a prompt hash of the
//! same text and `("user", "ab")` never collides with `("usera", "b")`.
//!
//! Keys: 32 bytes, each with an id (`[A-Za-z0-9._-]{1,64}`).
//! - Key file ([`Hasher::from_key_file`]): one key per line, `KEY_ID HEX64`; blank lines and
//!   lines starting with `#` are ignored. The **first** key is the current one (new rows); the
//!   others are older keys kept so rows written under them can still be looked up
//!   ([`Hasher::with_key`]). Keep the file mode `0600`; a group- or world-readable file is
//!   accepted but logged as a warning.
//! - Environment ([`Hasher::from_env`]): `WARDEN_TELEMETRY_KEY=ID:HEX64[,ID:HEX64...]`, first
//!   is current.
//! - Rotation: add a new first line (`openssl rand -hex 32` makes a key), keep the old lines,
//!   restart or reload. New rows carry the new id; old rows keep theirs. A key can be dropped
//!   once no row that needs looking up still carries its id (e.g. after retention deleted them).
//! - [`Hasher::ephemeral`] makes a random key for this process only (hashes are then not
//!   comparable across restarts); it is the fallback when no key is configured.
//!
//! Guarantees: keys are never printed: `Debug` shows ids only and [`KeyError`] messages name the
//! file and line, never their content. Non-goals: normalisation (callers pass text already
//! normalised by the guard normaliser), key storage or zeroisation (the key lives in process
//! memory like any other secret of the proxy).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Environment variable read by [`Hasher::from_env`].
pub const KEY_ENV_VAR: &str = "WARDEN_TELEMETRY_KEY";
/// Bytes in a [`KeyedHash`].
pub const HASH_LEN: usize = 32;

/// A keyed BLAKE3 hash. Only a [`Hasher`] makes one, so a hash column can never hold caller
/// text by mistake. Displays as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyedHash([u8; HASH_LEN]);

/// Computes keyed hashes with the current key; older keys are kept for lookups.
#[derive(Clone)]
pub struct Hasher {
    current: Arc<Key>,
    older: Arc<[Key]>,
}

/// Why a key could not be loaded. Never contains key material.
#[derive(Debug)]
#[non_exhaustive]
pub enum KeyError {
    /// The key file could not be read.
    Io {
        /// The key file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The environment variable is not set (or not Unicode).
    EnvMissing(String),
    /// No key in the source.
    Empty {
        /// File path or variable name.
        source: String,
    },
    /// A line or entry is malformed.
    Malformed {
        /// File path or variable name.
        source: String,
        /// 1-based line (file) or entry (variable) number.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Two keys share an id.
    DuplicateId {
        /// File path or variable name.
        source: String,
        /// The repeated id.
        id: String,
    },
}

struct Key {
    id: Arc<str>,
    bytes: [u8; 32],
}

/// The domains: one per kind of hashed input.
const DOMAIN_PROMPT: &[u8] = b"warden/prompt/v1";
const DOMAIN_SYSTEM: &[u8] = b"warden/system-prompt/v1";
const DOMAIN_MESSAGE: &[u8] = b"warden/message/v1";
const DOMAIN_CLIENT: &[u8] = b"warden/client-addr/v1";

// === impl KeyedHash ===

impl KeyedHash {
    /// The 32 bytes, as stored in the lake.
    pub fn as_bytes(&self) -> &[u8; HASH_LEN] {
        &self.0
    }

    /// The 64 lowercase hex digits, as SQL compares them (`encode(prompt_hash, 'hex')`).
    pub fn to_hex(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for KeyedHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(blake3::Hash::from_bytes(self.0).to_hex().as_str())
    }
}

impl fmt::Debug for KeyedHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

// === impl Hasher ===

impl Hasher {
    /// Builds a hasher from `(id, key)` pairs; the first is current.
    pub fn from_keys(keys: Vec<(String, [u8; 32])>) -> Result<Self, KeyError> {
        Self::build(
            "keys",
            keys.into_iter()
                .map(|(id, bytes)| Key {
                    id: id.into(),
                    bytes,
                })
                .collect(),
        )
    }

    /// Loads the key file at `path` (format in the module docs).
    pub fn from_key_file(path: &Path) -> Result<Self, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
            path: path.to_owned(),
            source,
        })?;
        warn_if_readable_by_others(path);
        Self::parse_key_file(&text, &path.display().to_string())
    }

    /// Parses key-file text; `source` names it in errors.
    pub fn parse_key_file(text: &str, source: &str) -> Result<Self, KeyError> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_whitespace();
            let (Some(id), Some(hex), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(malformed(source, i + 1, "expected `KEY_ID HEX64`"));
            };
            keys.push(parse_key(id, hex).map_err(|reason| malformed(source, i + 1, reason))?);
        }
        Self::build(source, keys)
    }

    /// Reads [`KEY_ENV_VAR`].
    pub fn from_env() -> Result<Self, KeyError> {
        let value =
            std::env::var(KEY_ENV_VAR).map_err(|_| KeyError::EnvMissing(KEY_ENV_VAR.into()))?;
        Self::parse_env_value(&value, KEY_ENV_VAR)
    }

    /// Parses `ID:HEX64[,ID:HEX64...]`; `source` names it in errors.
    pub fn parse_env_value(value: &str, source: &str) -> Result<Self, KeyError> {
        let mut keys = Vec::new();
        for (i, entry) in value.split(',').enumerate() {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let Some((id, hex)) = entry.split_once(':') else {
                return Err(malformed(source, i + 1, "expected `KEY_ID:HEX64`"));
            };
            keys.push(parse_key(id, hex).map_err(|reason| malformed(source, i + 1, reason))?);
        }
        Self::build(source, keys)
    }

    /// A random key for this process only, id `ephemeral-<16 hex>`: hashes are consistent within
    /// the process and meaningless after it exits.
    pub fn ephemeral() -> Self {
        let bytes: [u8; 32] = rand::random();
        let tag: [u8; 8] = rand::random();
        let key = Key {
            id: format!("ephemeral-{}", hex::encode(tag)).into(),
            bytes,
        };
        Hasher {
            current: Arc::new(key),
            older: Arc::from(Vec::new()),
        }
    }

    /// Id of the current key (the `hash_key_id` of new rows).
    pub fn key_id(&self) -> &str {
        &self.current.id
    }

    /// [`Self::key_id`], shared: what an [`crate::Event`] carries.
    pub fn key_id_shared(&self) -> Arc<str> {
        Arc::clone(&self.current.id)
    }

    /// Ids of all keys, current first.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        std::iter::once(&*self.current.id).chain(self.older.iter().map(|k| &*k.id))
    }

    /// A hasher whose current key is `id` (to look up rows written under an older key).
    pub fn with_key(&self, id: &str) -> Option<Hasher> {
        if &*self.current.id == id {
            return Some(self.clone());
        }
        let k = self.older.iter().find(|k| &*k.id == id)?;
        Some(Hasher {
            current: Arc::new(Key {
                id: k.id.clone(),
                bytes: k.bytes,
            }),
            older: Arc::from(Vec::new()),
        })
    }

    /// Hash of the whole prompt, already normalised by the caller.
    pub fn prompt(&self, normalised: &str) -> KeyedHash {
        self.keyed(DOMAIN_PROMPT, &[normalised.as_bytes()])
    }

    /// Hash of the effective system prompt, already normalised.
    pub fn system_prompt(&self, normalised: &str) -> KeyedHash {
        self.keyed(DOMAIN_SYSTEM, &[normalised.as_bytes()])
    }

    /// Hash of one message: its role (`system`, `user`, `assistant`, `tool`, ...) and its
    /// normalised content.
    pub fn message(&self, role: &str, normalised: &str) -> KeyedHash {
        self.keyed(DOMAIN_MESSAGE, &[role.as_bytes(), normalised.as_bytes()])
    }

    /// Hash of the client address as text (e.g. `203.0.113.7`; the caller decides whether the
    /// port is part of it).
    pub fn client_addr(&self, addr: &str) -> KeyedHash {
        self.keyed(DOMAIN_CLIENT, &[addr.as_bytes()])
    }

    fn keyed(&self, domain: &[u8], fields: &[&[u8]]) -> KeyedHash {
        let mut h = blake3::Hasher::new_keyed(&self.current.bytes);
        h.update(&(domain.len() as u64).to_le_bytes());
        h.update(domain);
        for f in fields {
            h.update(&(f.len() as u64).to_le_bytes());
            h.update(f);
        }
        KeyedHash(*h.finalize().as_bytes())
    }

    fn build(source: &str, keys: Vec<Key>) -> Result<Self, KeyError> {
        let mut it = keys.into_iter();
        let Some(current) = it.next() else {
            return Err(KeyError::Empty {
                source: source.into(),
            });
        };
        let older: Vec<Key> = it.collect();
        for (i, k) in older.iter().enumerate() {
            if k.id == current.id || older[..i].iter().any(|o| o.id == k.id) {
                return Err(KeyError::DuplicateId {
                    source: source.into(),
                    id: k.id.to_string(),
                });
            }
        }
        for k in std::iter::once(&current).chain(older.iter()) {
            if !valid_id(&k.id) {
                return Err(KeyError::Malformed {
                    source: source.into(),
                    line: 0,
                    reason: "key id must be 1-64 of [A-Za-z0-9._-]",
                });
            }
        }
        Ok(Hasher {
            current: Arc::new(current),
            older: Arc::from(older),
        })
    }
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hasher")
            .field("key_ids", &self.key_ids().collect::<Vec<_>>())
            .finish()
    }
}

fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn parse_key(id: &str, hex_text: &str) -> Result<Key, &'static str> {
    if !valid_id(id) {
        return Err("key id must be 1-64 of [A-Za-z0-9._-]");
    }
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut bytes).map_err(|_| "key must be exactly 64 hex digits")?;
    if bytes == [0u8; 32] {
        return Err("key must not be all zeros");
    }
    Ok(Key {
        id: id.into(),
        bytes,
    })
}

fn malformed(source: &str, line: usize, reason: &'static str) -> KeyError {
    KeyError::Malformed {
        source: source.into(),
        line,
        reason,
    }
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "telemetry key file is readable by group or others; chmod 600 it");
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

// === impl KeyError ===

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Io { path, source } => {
                write!(f, "telemetry key file {}: {source}", path.display())
            }
            KeyError::EnvMissing(var) => write!(f, "telemetry key variable {var} is not set"),
            KeyError::Empty { source } => write!(f, "telemetry key source {source} holds no key"),
            KeyError::Malformed {
                source,
                line,
                reason,
            } => {
                write!(f, "telemetry key source {source}, entry {line}: {reason}")
            }
            KeyError::DuplicateId { source, id } => {
                write!(
                    f,
                    "telemetry key source {source}: key id {id:?} appears twice"
                )
            }
        }
    }
}

impl std::error::Error for KeyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KeyError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const K2: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn key_file_first_is_current() {
        let text = format!("# keys\n\nk2 {K2}\nk1 {K1}\n");
        let h = Hasher::parse_key_file(&text, "test").unwrap();
        assert_eq!(h.key_id(), "k2");
        assert_eq!(h.key_ids().collect::<Vec<_>>(), ["k2", "k1"]);
        let old = h.with_key("k1").unwrap();
        assert_eq!(old.key_id(), "k1");
        let only_k1 = Hasher::parse_env_value(&format!("k1:{K1}"), "env").unwrap();
        assert_eq!(old.prompt("x"), only_k1.prompt("x"));
        assert_ne!(h.prompt("x"), only_k1.prompt("x"));
        assert!(h.with_key("nope").is_none());
    }

    #[test]
    fn domains_and_fields_are_separated() {
        let h = Hasher::parse_env_value(&format!("a:{K1}"), "env").unwrap();
        assert_ne!(h.prompt("hi"), h.system_prompt("hi"));
        assert_ne!(h.message("user", "ab"), h.message("usera", "b"));
        assert_ne!(h.client_addr("hi"), h.prompt("hi"));
        let p = h.prompt("hello");
        let hex = p.to_hex();
        assert_eq!(hex.len(), 64);
        assert!(hex
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(p.to_string(), hex);
        assert_eq!(format!("{p:?}"), hex);
        assert_eq!(hex::decode(&hex).unwrap(), p.as_bytes());
        assert_eq!(p, h.prompt("hello"));
    }

    #[test]
    fn errors_never_echo_keys() {
        let secret = "abcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefab";
        for text in [
            format!("k1 {secret}"),
            format!("k1 {K1} extra {secret}"),
            format!("bad/id {K1}zz"),
        ] {
            let e = Hasher::parse_key_file(&text, "f").unwrap_err().to_string();
            assert!(!e.contains(secret) && !e.contains(K1), "{e}");
        }
        assert!(matches!(
            Hasher::parse_key_file("# none\n", "f"),
            Err(KeyError::Empty { .. })
        ));
        let dup = format!("a {K1}\na {K2}\n");
        assert!(matches!(
            Hasher::parse_key_file(&dup, "f"),
            Err(KeyError::DuplicateId { .. })
        ));
        let h = Hasher::parse_key_file(&format!("a {K1}\n"), "f").unwrap();
        assert!(!format!("{h:?}").contains(K1));
    }

    #[test]
    fn ephemeral_keys_differ() {
        let (a, b) = (Hasher::ephemeral(), Hasher::ephemeral());
        assert!(a.key_id().starts_with("ephemeral-"));
        assert_ne!(a.prompt("x"), b.prompt("x"));
    }
}
