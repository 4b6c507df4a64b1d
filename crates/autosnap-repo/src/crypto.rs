//! Keys, chunk ids and the object envelope (compression + authenticated encryption).
//!
//! * **Master key**: 32 random bytes made at `init` (or a KMS data key given by the caller).
//!   Passphrases wrap it in `keys/` objects (Argon2id → XChaCha20-Poly1305); it never leaves
//!   memory unwrapped, and is zeroed on drop, as are every subkey, the cipher and HMAC states
//!   built from them, and the passphrase-derived key-encryption key.
//! * **Subkeys**: HKDF-SHA256(salt = repository id, ikm = master key) expanded with distinct
//!   `info` strings into the data key (AEAD), the id key (HMAC), a key-check value stored in
//!   the config so that a wrong raw key is detected at `open`, and (config version 2) the
//!   config key that authenticates the config itself.
//! * **Chunk ids**: SHA-256 of the plaintext (unencrypted) or HMAC-SHA256(id key, plaintext)
//!   (encrypted), so ids reveal nothing about content without the key.
//! * **Envelope** of every chunk, block map and manifest: `[header][payload]`, or with
//!   encryption `[header][nonce 24][ciphertext][tag 16]`; see `docs/repository-format.md`.

use std::cell::RefCell;

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::id::ChunkId;

/// Header flag: the payload is a zstd frame.
pub const FLAG_ZSTD: u8 = 0x01;
/// Header flag: the payload is encrypted with XChaCha20-Poly1305.
pub const FLAG_ENCRYPTED: u8 = 0x02;
/// XChaCha20-Poly1305 nonce length.
pub const NONCE_LEN: usize = 24;
/// Poly1305 tag length.
pub const TAG_LEN: usize = 16;
/// Prefix of every object's associated data.
const AAD_PREFIX: &[u8] = b"autosnap-repo-v1\0";

const INFO_DATA_KEY: &[u8] = b"autosnap-repo v1 data encryption key";
const INFO_ID_KEY: &[u8] = b"autosnap-repo v1 chunk id key";
const INFO_KEY_CHECK: &[u8] = b"autosnap-repo v1 key check";
/// Version 2 configs use another key-check `info`, so that a version-2 config cannot be
/// rewritten as an unauthenticated version-1 config without the master key.
const INFO_KEY_CHECK_V2: &[u8] = b"autosnap-repo v2 key check";
const INFO_CONFIG_KEY: &[u8] = b"autosnap-repo v2 config mac key";
/// Prefix of the config MAC's input.
const CONFIG_MAC_PREFIX: &[u8] = b"autosnap-repo v2 config\0";
const KEY_WRAP_AAD: &[u8] = b"autosnap-repo v1 key file\0";

/// Fills `buf` from the operating system's random number generator.
pub fn random_bytes(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|e| Error::Random(e.to_string()))
}

/// The repository's 32-byte master key; zeroed when dropped.
#[derive(Clone)]
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl MasterKey {
    /// A new random key.
    pub fn generate() -> Result<Self> {
        let mut key = Zeroizing::new([0u8; 32]);
        random_bytes(key.as_mut())?;
        Ok(MasterKey(key))
    }

    /// Wraps raw key bytes (for example a KMS data key's plaintext).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        MasterKey(Zeroizing::new(bytes))
    }

    fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn expand(&self, repository_id: &str, info: &[u8]) -> Zeroizing<[u8; 32]> {
        let hkdf = hkdf::Hkdf::<Sha256>::new(Some(repository_id.as_bytes()), self.bytes());
        let mut out = Zeroizing::new([0u8; 32]);
        hkdf.expand(info, out.as_mut())
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        out
    }

    /// The key-check value stored in a version-1 config (hex): HKDF(…, "key check"). It
    /// reveals nothing about the other subkeys.
    pub fn key_check(&self, repository_id: &str) -> String {
        hex::encode(self.expand(repository_id, INFO_KEY_CHECK).as_ref())
    }

    /// The key-check value of a config of format `version` (1 or 2).
    pub fn key_check_for(&self, repository_id: &str, version: u32) -> String {
        let info = if version >= 2 {
            INFO_KEY_CHECK_V2
        } else {
            INFO_KEY_CHECK
        };
        hex::encode(self.expand(repository_id, info).as_ref())
    }

    /// HMAC-SHA256 under the config key of `"autosnap-repo v2 config\0" ‖ canonical`, hex:
    /// the `config_mac` of a version-2 config (`canonical` is the config's JSON without it).
    pub fn config_mac(&self, repository_id: &str, canonical: &[u8]) -> String {
        let key = self.expand(repository_id, INFO_CONFIG_KEY);
        let mut mac = Hmac::<Sha256>::new_from_slice(key.as_ref()).expect("HMAC takes any key");
        mac.update(CONFIG_MAC_PREFIX);
        mac.update(canonical);
        hex::encode(mac.finalize().into_bytes())
    }

    /// Whether `mac` (hex) is the config MAC of `canonical`, compared in constant time.
    pub fn verify_config_mac(&self, repository_id: &str, canonical: &[u8], mac: &str) -> bool {
        let Ok(expected) = hex::decode(mac) else {
            return false;
        };
        let key = self.expand(repository_id, INFO_CONFIG_KEY);
        let mut hmac = Hmac::<Sha256>::new_from_slice(key.as_ref()).expect("HMAC takes any key");
        hmac.update(CONFIG_MAC_PREFIX);
        hmac.update(canonical);
        hmac.verify_slice(&expected).is_ok()
    }

    /// The subkeys used for chunks.
    pub(crate) fn derive(&self, repository_id: &str) -> DataKeys {
        let data = self.expand(repository_id, INFO_DATA_KEY);
        let id = self.expand(repository_id, INFO_ID_KEY);
        DataKeys {
            cipher: XChaCha20Poly1305::new(&(*data).into()),
            id_mac: Hmac::<Sha256>::new_from_slice(id.as_ref()).expect("HMAC takes any key"),
        }
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

/// Keys derived from the master key. Both fields wipe their key material when dropped (the
/// `zeroize` features of `chacha20poly1305`, `hmac` and `sha2`).
#[derive(Clone)]
pub(crate) struct DataKeys {
    cipher: XChaCha20Poly1305,
    /// HMAC already keyed with the id key; cloned per chunk.
    id_mac: Hmac<Sha256>,
}

/// How an object is hashed, compressed and encrypted: the repository's codec.
#[derive(Clone)]
pub(crate) struct Codec {
    keys: Option<DataKeys>,
    /// zstd level, or `None` for no compression.
    level: Option<i32>,
}

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

fn compress(level: i32, data: &[u8]) -> std::io::Result<Vec<u8>> {
    COMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.as_ref().is_none_or(|(l, _)| *l != level) {
            *cell = Some((level, zstd::bulk::Compressor::new(level)?));
        }
        let (_, compressor) = cell.as_mut().expect("set above");
        compressor.compress(data)
    })
}

/// Decompresses one zstd frame of at most `max_len` bytes. The frame must record its
/// content size (every writer's frames do): the output buffer is allocated at that size, never
/// at `max_len`, so a small hostile frame cannot make a reader allocate the limit.
fn decompress(data: &[u8], max_len: usize) -> std::result::Result<Vec<u8>, String> {
    let size = match zstd::zstd_safe::get_frame_content_size(data) {
        Ok(Some(size)) => size,
        Ok(None) => return Err("zstd frame does not record its content size".to_owned()),
        Err(_) => return Err("not a zstd frame".to_owned()),
    };
    if size > max_len as u64 {
        return Err(format!(
            "zstd frame holds {size} bytes, more than the limit {max_len}"
        ));
    }
    DECOMPRESSOR.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.is_none() {
            *cell = Some(zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?);
        }
        // `size` bounds the whole output: a second frame that would exceed it fails.
        cell.as_mut()
            .expect("set above")
            .decompress(data, size as usize)
            .map_err(|e| format!("zstd decompression failed: {e}"))
    })
}

fn aad(header: u8, name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_PREFIX.len() + 1 + name.len());
    aad.extend_from_slice(AAD_PREFIX);
    aad.push(header);
    aad.extend_from_slice(name.as_bytes());
    aad
}

impl Codec {
    pub(crate) fn new(keys: Option<DataKeys>, level: Option<i32>) -> Self {
        Codec { keys, level }
    }

    pub(crate) fn encrypted(&self) -> bool {
        self.keys.is_some()
    }

    /// The id of a plaintext: SHA-256, or HMAC-SHA256 under the id key.
    pub(crate) fn id(&self, plaintext: &[u8]) -> ChunkId {
        match &self.keys {
            None => ChunkId(Sha256::digest(plaintext).into()),
            Some(keys) => {
                let mut mac = keys.id_mac.clone();
                mac.update(plaintext);
                ChunkId(mac.finalize().into_bytes().into())
            }
        }
    }

    /// Encodes `plaintext` as the object `name`: compressed when that makes it smaller, then
    /// encrypted when the repository is.
    pub(crate) fn seal(&self, name: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        let compressed = match self.level {
            Some(level) => {
                let c = compress(level, plaintext).map_err(|e| Error::CorruptObject {
                    name: name.to_owned(),
                    reason: format!("zstd compression failed: {e}"),
                })?;
                (c.len() < plaintext.len()).then_some(c)
            }
            None => None,
        };
        let mut header = 0u8;
        if compressed.is_some() {
            header |= FLAG_ZSTD;
        }
        let payload = compressed.as_deref().unwrap_or(plaintext);
        let Some(keys) = &self.keys else {
            let mut out = Vec::with_capacity(1 + payload.len());
            out.push(header);
            out.extend_from_slice(payload);
            return Ok(out);
        };
        header |= FLAG_ENCRYPTED;
        let mut nonce = [0u8; NONCE_LEN];
        random_bytes(&mut nonce)?;
        let start = 1 + NONCE_LEN;
        let mut out = Vec::with_capacity(start + payload.len() + TAG_LEN);
        out.push(header);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(payload);
        let tag = keys
            .cipher
            .encrypt_inout_detached(
                &XNonce::from(nonce),
                &aad(header, name),
                (&mut out[start..]).into(),
            )
            .map_err(|_| Error::CorruptObject {
                name: name.to_owned(),
                reason: "encryption failed (object too large)".to_owned(),
            })?;
        out.extend_from_slice(tag.as_slice());
        Ok(out)
    }

    /// Decodes an object written by [`Codec::seal`] under `name`; the error is the reason.
    pub(crate) fn open(
        &self,
        name: &str,
        mut sealed: Vec<u8>,
        max_len: usize,
    ) -> std::result::Result<Vec<u8>, String> {
        let Some(&header) = sealed.first() else {
            return Err("empty object".to_owned());
        };
        if header & !(FLAG_ZSTD | FLAG_ENCRYPTED) != 0 {
            return Err(format!("unknown header byte {header:#04x}"));
        }
        let encrypted = header & FLAG_ENCRYPTED != 0;
        let payload: Vec<u8> = match (&self.keys, encrypted) {
            (None, false) => {
                sealed.remove(0);
                sealed
            }
            (Some(keys), true) => {
                let start = 1 + NONCE_LEN;
                if sealed.len() < start + TAG_LEN {
                    return Err("encrypted object is too short".to_owned());
                }
                let nonce = XNonce::try_from(&sealed[1..start]).expect("24 bytes");
                let tag_at = sealed.len() - TAG_LEN;
                let tag = Tag::try_from(&sealed[tag_at..]).expect("16 bytes");
                keys.cipher
                    .decrypt_inout_detached(
                        &nonce,
                        &aad(header, name),
                        (&mut sealed[start..tag_at]).into(),
                        &tag,
                    )
                    .map_err(|_| {
                        "authentication failed (the ciphertext was modified, or the object \
                         was moved from another name)"
                            .to_owned()
                    })?;
                sealed.truncate(tag_at);
                sealed.drain(..start);
                sealed
            }
            (None, true) => return Err("object is encrypted but the repository is not".to_owned()),
            (Some(_), false) => {
                return Err("object is not encrypted but the repository is".to_owned())
            }
        };
        if header & FLAG_ZSTD != 0 {
            decompress(&payload, max_len)
        } else if payload.len() > max_len {
            Err(format!(
                "{} bytes, more than the limit {max_len}",
                payload.len()
            ))
        } else {
            Ok(payload)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Passphrase key files
// ---------------------------------------------------------------------------------------------

/// Argon2id cost parameters for a passphrase key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KdfParams {
    /// Memory in KiB (default 65536 = 64 MiB).
    pub m_cost_kib: u32,
    /// Passes (default 3).
    pub t_cost: u32,
    /// Lanes (default 1).
    pub p_cost: u32,
}

impl Default for KdfParams {
    /// RFC 9106's second recommended option (64 MiB, 3 passes), with one lane.
    fn default() -> Self {
        KdfParams {
            m_cost_kib: 64 * 1024,
            t_cost: 3,
            p_cost: 1,
        }
    }
}

/// Most memory a key file may ask Argon2id for (KiB): 1 GiB. Key files are read from the
/// repository's storage, so without a bound a planted one could ask for terabytes.
pub const MAX_KDF_MEMORY_KIB: u32 = 1 << 20;
/// Least memory a key file may use (KiB): 8 MiB (below that Argon2id protects little).
pub const MIN_KDF_MEMORY_KIB: u32 = 8 << 10;
/// Most Argon2id passes a key file may ask for.
pub const MAX_KDF_PASSES: u32 = 16;
/// Most Argon2id lanes a key file may ask for.
pub const MAX_KDF_LANES: u32 = 16;

impl KdfParams {
    /// Checks the parameters against the bounds above (applied to key files read from a
    /// repository as well as to new ones).
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason: String| Err(Error::InvalidKdf { reason });
        if !(MIN_KDF_MEMORY_KIB..=MAX_KDF_MEMORY_KIB).contains(&self.m_cost_kib) {
            return invalid(format!(
                "m_cost_kib {} is outside {MIN_KDF_MEMORY_KIB}..={MAX_KDF_MEMORY_KIB}",
                self.m_cost_kib
            ));
        }
        if !(1..=MAX_KDF_PASSES).contains(&self.t_cost) {
            return invalid(format!(
                "t_cost {} is outside 1..={MAX_KDF_PASSES}",
                self.t_cost
            ));
        }
        if !(1..=MAX_KDF_LANES).contains(&self.p_cost) {
            return invalid(format!(
                "p_cost {} is outside 1..={MAX_KDF_LANES}",
                self.p_cost
            ));
        }
        if self.m_cost_kib < 8 * self.p_cost {
            return invalid("m_cost_kib must be at least 8 × p_cost".to_owned());
        }
        Ok(())
    }

    /// Cheap parameters for tests only (8 MiB, 1 pass).
    pub fn insecure_for_tests() -> Self {
        KdfParams {
            m_cost_kib: 8 * 1024,
            t_cost: 1,
            p_cost: 1,
        }
    }

    fn derive(&self, passphrase: &[u8], salt: &[u8]) -> Result<Zeroizing<[u8; 32]>> {
        self.validate()?;
        let params = argon2::Params::new(self.m_cost_kib, self.t_cost, self.p_cost, Some(32))
            .map_err(|e| Error::InvalidKdf {
                reason: e.to_string(),
            })?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into(passphrase, salt, out.as_mut())
            .map_err(|e| Error::InvalidKdf {
                reason: e.to_string(),
            })?;
        Ok(out)
    }
}

/// A `keys/<id>` object: the master key wrapped under a passphrase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyFile {
    /// Key file format version (1).
    pub version: u32,
    /// Always `argon2id`.
    pub kdf: String,
    /// Argon2id parameters.
    pub params: KdfParams,
    /// 16 random bytes, hex.
    pub salt: String,
    /// 24 random bytes, hex.
    pub nonce: String,
    /// XChaCha20-Poly1305 of the 32-byte master key (48 bytes with the tag), hex.
    pub wrapped_key: String,
    /// When the key was added.
    pub created: chrono::DateTime<chrono::Utc>,
    /// Host that added it (informational).
    #[serde(default)]
    pub host: String,
}

/// Largest `keys/` object a reader accepts (bytes): a key file is ~400 bytes of JSON.
pub const MAX_KEY_FILE_LEN: u64 = 16 << 10;

impl KeyFile {
    /// Parses and checks a `keys/` object: JSON of the right shape, version 1, `argon2id`
    /// with parameters within bounds ([`KdfParams::validate`]), salt, nonce and wrapped key
    /// of the right lengths. The error says what is wrong (the caller names the object).
    pub fn decode(bytes: &[u8]) -> std::result::Result<KeyFile, String> {
        if bytes.len() as u64 > MAX_KEY_FILE_LEN {
            return Err(format!("larger than {MAX_KEY_FILE_LEN} bytes"));
        }
        let file: KeyFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if file.version != 1 || file.kdf != "argon2id" {
            return Err(format!(
                "version {} / kdf {:?}: this autosnap reads version 1 with argon2id",
                file.version, file.kdf
            ));
        }
        file.params.validate().map_err(|e| e.to_string())?;
        let hex_len = |field: &str, value: &str, bytes: usize| {
            if value.len() == 2 * bytes && hex::decode(value).is_ok() {
                Ok(())
            } else {
                Err(format!("`{field}` is not {bytes} bytes of hex"))
            }
        };
        hex_len("salt", &file.salt, 16)?;
        hex_len("nonce", &file.nonce, NONCE_LEN)?;
        hex_len("wrapped_key", &file.wrapped_key, 32 + TAG_LEN)?;
        Ok(file)
    }
}

fn wrap_aad(repository_id: &str) -> Vec<u8> {
    let mut aad = KEY_WRAP_AAD.to_vec();
    aad.extend_from_slice(repository_id.as_bytes());
    aad
}

impl KeyFile {
    /// Wraps `master` under `passphrase`.
    pub fn wrap(
        master: &MasterKey,
        passphrase: &str,
        params: KdfParams,
        repository_id: &str,
        created: chrono::DateTime<chrono::Utc>,
    ) -> Result<Self> {
        let mut salt = [0u8; 16];
        random_bytes(&mut salt)?;
        let mut nonce = [0u8; NONCE_LEN];
        random_bytes(&mut nonce)?;
        let kek = params.derive(passphrase.as_bytes(), &salt)?;
        let cipher = XChaCha20Poly1305::new(&(*kek).into());
        let mut buf = master.bytes().to_vec();
        let tag = cipher
            .encrypt_inout_detached(
                &XNonce::from(nonce),
                &wrap_aad(repository_id),
                buf.as_mut_slice().into(),
            )
            .expect("32 bytes always encrypt");
        buf.extend_from_slice(tag.as_slice());
        Ok(KeyFile {
            version: 1,
            kdf: "argon2id".to_owned(),
            params,
            salt: hex::encode(salt),
            nonce: hex::encode(nonce),
            wrapped_key: hex::encode(buf),
            created,
            host: crate::lock::hostname(),
        })
    }

    /// The master key, or `Ok(None)` when `passphrase` is not this key's passphrase.
    pub fn unwrap_key(&self, passphrase: &str, repository_id: &str) -> Result<Option<MasterKey>> {
        let invalid = |what: &str| Error::InvalidConfig {
            reason: format!("key file: invalid {what}"),
        };
        if self.version != 1 || self.kdf != "argon2id" {
            return Err(invalid("version or kdf"));
        }
        let salt = hex::decode(&self.salt).map_err(|_| invalid("salt"))?;
        let nonce: [u8; NONCE_LEN] = hex::decode(&self.nonce)
            .ok()
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| invalid("nonce"))?;
        let mut wrapped =
            Zeroizing::new(hex::decode(&self.wrapped_key).map_err(|_| invalid("wrapped_key"))?);
        if wrapped.len() != 32 + TAG_LEN {
            return Err(invalid("wrapped_key length"));
        }
        let kek = self.params.derive(passphrase.as_bytes(), &salt)?;
        let cipher = XChaCha20Poly1305::new(&(*kek).into());
        let tag = Tag::try_from(&wrapped[32..]).expect("16 bytes");
        let ok = cipher
            .decrypt_inout_detached(
                &XNonce::from(nonce),
                &wrap_aad(repository_id),
                (&mut wrapped[..32]).into(),
                &tag,
            )
            .is_ok();
        if !ok {
            return Ok(None);
        }
        let mut key = MasterKey(Zeroizing::new([0u8; 32]));
        key.0.copy_from_slice(&wrapped[..32]);
        Ok(Some(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(encrypted: bool, level: Option<i32>) -> Codec {
        let keys = encrypted.then(|| MasterKey::from_bytes([7; 32]).derive("repo"));
        Codec::new(keys, level)
    }

    #[test]
    fn envelope_round_trips() {
        let data: Vec<u8> = (0..10_000u32).flat_map(|i| (i % 7).to_le_bytes()).collect();
        for encrypted in [false, true] {
            for level in [None, Some(3)] {
                let c = codec(encrypted, level);
                let sealed = c.seal("chunks/ab/x", &data).unwrap();
                assert_eq!(sealed[0] & FLAG_ENCRYPTED != 0, encrypted);
                assert_eq!(sealed[0] & FLAG_ZSTD != 0, level.is_some());
                assert_eq!(
                    c.open("chunks/ab/x", sealed.clone(), 1 << 20).unwrap(),
                    data
                );
                if encrypted {
                    // Bound to its name.
                    assert!(c.open("chunks/ab/y", sealed, 1 << 20).is_err());
                } else if level.is_some() {
                    assert!(c.open("chunks/ab/x", sealed, 100).is_err(), "size limit");
                }
            }
        }
    }

    #[test]
    fn incompressible_data_is_stored_raw() {
        let mut data = vec![0u8; 4096];
        random_bytes(&mut data).unwrap();
        let sealed = codec(false, Some(3)).seal("n", &data).unwrap();
        assert_eq!(sealed[0], 0);
        assert_eq!(&sealed[1..], &data[..]);
    }

    #[test]
    fn ids_are_keyed_when_encrypted() {
        let plain = codec(false, None).id(b"hello");
        assert_eq!(
            plain.to_hex(),
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        let keyed = codec(true, None).id(b"hello");
        assert_ne!(plain, keyed);
        let other = Codec::new(Some(MasterKey::from_bytes([8; 32]).derive("repo")), None);
        assert_ne!(other.id(b"hello"), keyed);
    }

    #[test]
    fn key_material_is_wiped_on_drop() {
        // Compile-time: these hold keys and must zero them when dropped (the `zeroize`
        // features in Cargo.toml); a dependency update that lost them fails here.
        fn wipes<T: zeroize::ZeroizeOnDrop>() {}
        wipes::<XChaCha20Poly1305>();
        wipes::<Zeroizing<[u8; 32]>>();
        wipes::<sha2::Sha256>();
    }

    #[test]
    fn kdf_bounds_are_checked_before_argon2_runs() {
        let huge = KdfParams {
            m_cost_kib: u32::MAX,
            t_cost: 1,
            p_cost: 1,
        };
        assert!(matches!(
            huge.derive(b"pw", &[0; 16]),
            Err(Error::InvalidKdf { .. })
        ));
        for bad in [
            KdfParams {
                m_cost_kib: 1024,
                ..KdfParams::default()
            },
            KdfParams {
                t_cost: 0,
                ..KdfParams::default()
            },
            KdfParams {
                t_cost: 17,
                ..KdfParams::default()
            },
            KdfParams {
                p_cost: 0,
                ..KdfParams::default()
            },
            KdfParams {
                p_cost: 17,
                ..KdfParams::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        KdfParams::default().validate().unwrap();
        KdfParams::insecure_for_tests().validate().unwrap();
    }

    #[test]
    fn config_mac_detects_any_change() {
        let master = MasterKey::from_bytes([4; 32]);
        let mac = master.config_mac("r1", b"{\"a\":1}");
        assert!(master.verify_config_mac("r1", b"{\"a\":1}", &mac));
        assert!(!master.verify_config_mac("r1", b"{\"a\":2}", &mac));
        assert!(!master.verify_config_mac("r2", b"{\"a\":1}", &mac));
        assert!(!MasterKey::from_bytes([5; 32]).verify_config_mac("r1", b"{\"a\":1}", &mac));
        assert!(!master.verify_config_mac("r1", b"{\"a\":1}", "zz"));
        assert_ne!(master.key_check_for("r1", 1), master.key_check_for("r1", 2));
        assert_eq!(master.key_check_for("r1", 1), master.key_check("r1"));
    }

    #[test]
    fn key_file_wraps_and_rejects_wrong_passphrase() {
        let master = MasterKey::from_bytes([9; 32]);
        let now = chrono::Utc::now();
        let file = KeyFile::wrap(
            &master,
            "correct horse",
            KdfParams::insecure_for_tests(),
            "r1",
            now,
        )
        .unwrap();
        let back = file.unwrap_key("correct horse", "r1").unwrap().unwrap();
        assert_eq!(back.bytes(), master.bytes());
        assert!(file.unwrap_key("wrong", "r1").unwrap().is_none());
        assert!(file.unwrap_key("correct horse", "r2").unwrap().is_none());
    }
}
