//! The `config` object: format version, chunking, hashing, compression and encryption
//! parameters. It is the only object stored as plain JSON besides `keys/` and `locks/`.
//!
//! Format version 2 authenticates the config of an encrypted repository: `encryption.config_mac`
//! is an HMAC of the rest of the config under a key derived from the master key, and the key
//! check uses a version-2 derivation, so someone who can write the storage but does not hold
//! the key can neither change an encrypted config nor rewrite it as an (unauthenticated)
//! version-1 one. Version-1 repositories are still read and written; see
//! `docs/repository-format.md` for what protects them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::crypto::KdfParams;

/// `format` value of every config.
pub const FORMAT_NAME: &str = "autosnap-repository";
/// The repository format version this crate writes (it reads 1 and 2).
pub const FORMAT_VERSION: u32 = 2;
/// The oldest format version this crate reads.
pub const OLDEST_FORMAT_VERSION: u32 = 1;
/// Largest `config` object a reader accepts (bytes); a config is well under 1 KiB.
pub const MAX_CONFIG_LEN: u64 = 64 << 10;
/// Key of the KMS encryption context that names the repository (format version 2): KMS
/// `GenerateDataKey` and `Decrypt` are called with `{"autosnap:repository": <config.id>}`, so a
/// wrapped key cannot be moved into another repository's config, and CloudTrail names the
/// repository behind every `Decrypt`.
pub const KMS_CONTEXT_KEY: &str = "autosnap:repository";
/// Chunk size: the EBS block size.
pub const CHUNK_SIZE: u32 = 524_288;
/// Default block-map segment span: 16384 blocks (8 GiB of volume).
pub const DEFAULT_SEGMENT_BLOCKS: u32 = 16_384;
/// Default zstd level.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
/// Name of the config object.
pub const CONFIG_NAME: &str = "config";

/// The repository's `config` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoConfig {
    /// Always `autosnap-repository`.
    pub format: String,
    /// Format version; readers refuse versions they do not know.
    pub version: u32,
    /// Random repository id (32 hex digits); the HKDF salt and part of key-wrapping AAD.
    pub id: String,
    /// When the repository was created.
    pub created: DateTime<Utc>,
    /// Block and maximum chunk size in bytes (524288).
    pub chunk_size: u32,
    /// Block indexes per block-map segment.
    pub segment_blocks: u32,
    /// `sha256` (unencrypted) or `hmac-sha256` (encrypted): how chunk ids are computed.
    pub hash: HashAlgorithm,
    /// How writers compress objects (readers follow each object's header byte).
    pub compression: Compression,
    /// Present when the repository is encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionConfig>,
}

/// How chunk ids are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HashAlgorithm {
    /// SHA-256 of the plaintext.
    Sha256,
    /// HMAC-SHA256 of the plaintext under the id key.
    HmacSha256,
}

/// Compression writers apply to objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "algorithm", rename_all = "lowercase")]
pub enum Compression {
    /// Objects are stored uncompressed.
    None,
    /// zstd at `level`; an object whose frame would not be smaller is stored raw.
    Zstd { level: i32 },
}

impl Default for Compression {
    fn default() -> Self {
        Compression::Zstd {
            level: DEFAULT_ZSTD_LEVEL,
        }
    }
}

impl Compression {
    pub(crate) fn level(&self) -> Option<i32> {
        match self {
            Compression::None => None,
            Compression::Zstd { level } => Some(*level),
        }
    }
}

/// Encryption parameters in the config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptionConfig {
    /// Always `xchacha20poly1305`.
    pub cipher: String,
    /// Always `hkdf-sha256` (subkeys from the master key, salt = repository id).
    pub key_derivation: String,
    /// HKDF(master, "autosnap-repo v1 key check"), hex: detects a wrong key at open.
    pub key_check: String,
    /// The master key wrapped by AWS KMS (`GenerateDataKey`), when the repository uses one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms: Option<KmsWrappedKey>,
    /// Format version 2: HMAC-SHA256 of the rest of the config under the config key, hex
    /// (see [`RepoConfig::canonical_bytes`]). Required in version 2, absent in version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_mac: Option<String>,
}

impl RepoConfig {
    /// The bytes `encryption.config_mac` authenticates: the config as compact JSON, fields
    /// in declaration order, absent optional fields left out, and `config_mac` itself left
    /// out. Fields this crate does not know are not covered (readers ignore them).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut unsigned = self.clone();
        if let Some(encryption) = &mut unsigned.encryption {
            encryption.config_mac = None;
        }
        serde_json::to_vec(&unsigned).expect("serialisable")
    }

    /// The KMS encryption context of this repository's wrapped key: `Some` from format
    /// version 2 (see [`KMS_CONTEXT_KEY`]); version-1 repositories were created without one.
    pub fn kms_encryption_context(&self) -> Option<(String, String)> {
        (self.version >= 2).then(|| (KMS_CONTEXT_KEY.to_owned(), self.id.clone()))
    }
}

/// A new random repository id (32 hex digits), for callers that need it before
/// [`Repository::init_with_id`](crate::Repository::init_with_id) (the KMS encryption context).
pub fn new_repository_id() -> crate::Result<String> {
    let mut id = [0u8; 16];
    crate::crypto::random_bytes(&mut id)?;
    Ok(hex::encode(id))
}

/// The KMS encryption context of a new repository with id `id`.
pub fn kms_encryption_context_for(id: &str) -> (String, String) {
    (KMS_CONTEXT_KEY.to_owned(), id.to_owned())
}

/// A master key encrypted by KMS: opaque to this crate. The AWS layer calls KMS `Decrypt` on
/// `ciphertext` and opens the repository with [`Credentials::DataKey`](crate::Credentials).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KmsWrappedKey {
    /// The KMS key id or ARN that wrapped the key.
    pub key_id: String,
    /// The `CiphertextBlob` of `GenerateDataKey`, hex.
    pub ciphertext: String,
}

impl KmsWrappedKey {
    /// A wrapped key from KMS's answer: the key id and the raw `CiphertextBlob`.
    pub fn new(key_id: impl Into<String>, ciphertext: &[u8]) -> KmsWrappedKey {
        KmsWrappedKey {
            key_id: key_id.into(),
            ciphertext: hex::encode(ciphertext),
        }
    }

    /// The raw `CiphertextBlob` to hand to KMS `Decrypt`.
    pub fn ciphertext_bytes(&self) -> crate::Result<Vec<u8>> {
        hex::decode(&self.ciphertext).map_err(|_| crate::Error::InvalidConfig {
            reason: "encryption.kms.ciphertext is not hex".to_owned(),
        })
    }
}

/// How a new repository protects its data.
#[derive(Clone, Default)]
pub enum EncryptionInit {
    /// No encryption: chunk ids are plain SHA-256 of the content.
    #[default]
    None,
    /// A random master key wrapped under this passphrase (Argon2id with these parameters).
    Passphrase { passphrase: String, kdf: KdfParams },
    /// This 32-byte key is the master key (a KMS data key's plaintext); `kms` is stored in
    /// the config so that the AWS layer can unwrap it again.
    DataKey {
        key: [u8; 32],
        kms: Option<KmsWrappedKey>,
    },
}

impl Drop for EncryptionInit {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        match self {
            EncryptionInit::None => {}
            EncryptionInit::Passphrase { passphrase, .. } => passphrase.zeroize(),
            EncryptionInit::DataKey { key, .. } => key.zeroize(),
        }
    }
}

impl std::fmt::Debug for EncryptionInit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EncryptionInit::None => f.write_str("None"),
            EncryptionInit::Passphrase { kdf, .. } => write!(f, "Passphrase({kdf:?})"),
            EncryptionInit::DataKey { kms, .. } => write!(f, "DataKey(kms: {kms:?})"),
        }
    }
}

/// Options of [`Repository::init`](crate::Repository::init).
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub encryption: EncryptionInit,
    pub compression: Compression,
    /// Block indexes per block-map segment (tests use small values).
    pub segment_blocks: u32,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            encryption: EncryptionInit::None,
            compression: Compression::default(),
            segment_blocks: DEFAULT_SEGMENT_BLOCKS,
        }
    }
}

/// What opens an encrypted repository.
#[derive(Clone, Default)]
pub enum Credentials {
    /// For unencrypted repositories.
    #[default]
    None,
    /// A passphrase that opens one of the `keys/` objects.
    Passphrase(String),
    /// The master key itself (a KMS data key's plaintext).
    DataKey([u8; 32]),
}

impl Drop for Credentials {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        match self {
            Credentials::None => {}
            Credentials::Passphrase(passphrase) => passphrase.zeroize(),
            Credentials::DataKey(key) => key.zeroize(),
        }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credentials::None => "None",
            Credentials::Passphrase(_) => "Passphrase(..)",
            Credentials::DataKey(_) => "DataKey(..)",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_json_shape() {
        let config = RepoConfig {
            format: FORMAT_NAME.into(),
            version: 1,
            id: "00".repeat(16),
            created: "2024-01-01T00:00:00Z".parse().unwrap(),
            chunk_size: CHUNK_SIZE,
            segment_blocks: DEFAULT_SEGMENT_BLOCKS,
            hash: HashAlgorithm::HmacSha256,
            compression: Compression::default(),
            encryption: Some(EncryptionConfig {
                cipher: "xchacha20poly1305".into(),
                key_derivation: "hkdf-sha256".into(),
                key_check: "ab".into(),
                kms: Some(KmsWrappedKey {
                    key_id: "alias/backup".into(),
                    ciphertext: "0102".into(),
                }),
                config_mac: Some("cd".into()),
            }),
        };
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(json["hash"], "hmac-sha256");
        assert_eq!(json["compression"]["algorithm"], "zstd");
        assert_eq!(json["compression"]["level"], 3);
        assert_eq!(json["encryption"]["kms"]["key_id"], "alias/backup");
        let back: RepoConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back, config);
        // The MAC's input leaves the MAC out and nothing else.
        let canonical: serde_json::Value =
            serde_json::from_slice(&config.canonical_bytes()).unwrap();
        assert!(canonical["encryption"].get("config_mac").is_none());
        assert_eq!(canonical["encryption"]["key_check"], "ab");
    }
}
