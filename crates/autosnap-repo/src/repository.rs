//! [`Repository`]: open or create a repository; store and fetch chunks and manifests.

use std::sync::Arc;

use chrono::Utc;

use serde::Serialize;

use crate::backend::{Backend, ObjectInfo};
use crate::blockmap::{Segment, MAX_SPAN};
use crate::config::{
    Compression, Credentials, EncryptionConfig, EncryptionInit, HashAlgorithm, InitOptions,
    RepoConfig, CHUNK_SIZE, CONFIG_NAME, FORMAT_NAME, FORMAT_VERSION, MAX_CONFIG_LEN,
    OLDEST_FORMAT_VERSION,
};
use crate::crypto::{
    Codec, KdfParams, KeyFile, MasterKey, FLAG_ENCRYPTED, MAX_KEY_FILE_LEN, NONCE_LEN, TAG_LEN,
};
use crate::error::{BackendError, Error, Result};
use crate::id::{ArchiveId, ChunkId};
use crate::lock::{LockKind, LockOptions, RepoLock};
use crate::manifest::{Manifest, MANIFEST_VERSION};

/// Prefix of chunk objects: `chunks/<first two hex digits>/<64 hex digits>`.
pub const CHUNKS_PREFIX: &str = "chunks/";
/// Prefix of block-map segment objects: `blockmaps/<2 hex>/<64 hex>`.
pub const BLOCKMAPS_PREFIX: &str = "blockmaps/";
/// Prefix of manifests: `manifests/<archive id>`.
pub const MANIFESTS_PREFIX: &str = "manifests/";
/// Prefix of passphrase key files: `keys/<32 hex>`.
pub const KEYS_PREFIX: &str = "keys/";
/// Largest manifest (decoded JSON) a writer writes and a reader accepts: 64 MiB, room for
/// ~400,000 segment references (petabytes of volumes at the default segment span).
pub const MAX_MANIFEST_LEN: usize = 64 << 20;
/// Bytes the envelope adds to a payload at most (header, nonce, tag). Writers store a payload
/// raw when compression would not shrink it, so a stored object is never longer than its
/// plaintext plus this: the read limit of each kind of object.
pub const ENVELOPE_OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;
/// Most `keys/` objects tried when opening with a passphrase (each costs an Argon2id run).
pub const MAX_KEY_FILES: usize = 64;
/// Newest manifests read at `open` of an unencrypted repository to check that none is
/// encrypted (see [`Repository::open`]).
pub const PROBE_MANIFESTS: usize = 4;

/// The object name of chunk `id`.
pub fn chunk_object_name(id: &ChunkId) -> String {
    let hex = id.to_hex();
    format!("{CHUNKS_PREFIX}{}/{hex}", &hex[..2])
}

/// The object name of block-map segment `id`.
pub fn blockmap_object_name(id: &ChunkId) -> String {
    let hex = id.to_hex();
    format!("{BLOCKMAPS_PREFIX}{}/{hex}", &hex[..2])
}

/// The object name of archive `id`'s manifest.
pub fn manifest_object_name(id: &ArchiveId) -> String {
    format!("{MANIFESTS_PREFIX}{id}")
}

/// The id in a `chunks/ab/…` or `blockmaps/ab/…` object name, if it is one.
pub(crate) fn id_from_object_name(name: &str, prefix: &str) -> Option<ChunkId> {
    let rest = name.strip_prefix(prefix)?;
    let (fan, hex) = rest.split_once('/')?;
    let id: ChunkId = hex.parse().ok()?;
    (fan == &hex[..2]).then_some(id)
}

/// What [`Repository::put_chunk`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutChunk {
    pub id: ChunkId,
    /// Whether this call stored the chunk (`false`: it was already in the repository).
    pub new: bool,
    /// Bytes written (compressed, encrypted); 0 when the chunk was already stored.
    pub stored_len: u64,
}

/// An open repository. Cheap to clone, `Send + Sync`: share it between threads.
#[derive(Clone)]
pub struct Repository {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Arc<dyn Backend>,
    config: RepoConfig,
    codec: Codec,
    master: Option<MasterKey>,
    lock_options: LockOptions,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("location", &self.inner.backend.location())
            .field("id", &self.inner.config.id)
            .field("encrypted", &self.is_encrypted())
            .finish()
    }
}

/// An archive whose manifest could not be read or failed its checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnreadableArchive {
    pub id: ArchiveId,
    /// The manifest's object name.
    pub object: String,
    /// What is wrong.
    pub reason: String,
}

/// Every archive of a repository: the manifests that read, and those that did not.
#[derive(Debug, Clone, Default)]
pub struct ArchiveScan {
    /// Readable manifests, oldest first (see [`Manifest::chronological`]).
    pub manifests: Vec<Manifest>,
    /// Manifests that could not be read or failed their checks, by id.
    pub unreadable: Vec<UnreadableArchive>,
}

impl Repository {
    /// Creates a repository in an empty backend. The `config` object is written last, so an
    /// interrupted init leaves no repository (only an unused key file, which `open` skips).
    pub fn init(backend: Arc<dyn Backend>, options: InitOptions) -> Result<Repository> {
        let id = crate::config::new_repository_id()?;
        Repository::init_with_id(backend, options, id)
    }

    /// [`Repository::init`] with an id from [`crate::config::new_repository_id`] (the AWS
    /// layer needs it first, for the KMS encryption context of the data key).
    pub fn init_with_id(
        backend: Arc<dyn Backend>,
        options: InitOptions,
        id: String,
    ) -> Result<Repository> {
        if id.len() != 32
            || !id
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        {
            return Err(Error::InvalidConfig {
                reason: format!("repository id {id:?} is not 32 lowercase hex digits"),
            });
        }
        if backend.exists(CONFIG_NAME)? {
            return Err(Error::AlreadyInitialized {
                location: backend.location(),
            });
        }
        if options.segment_blocks == 0 || options.segment_blocks > MAX_SPAN {
            return Err(Error::InvalidConfig {
                reason: format!("segment_blocks must be in 1..={MAX_SPAN}"),
            });
        }
        let now = Utc::now();
        let (master, kms) = match &options.encryption {
            EncryptionInit::None => (None, None),
            EncryptionInit::Passphrase { passphrase, kdf } => {
                kdf.validate()?;
                let master = MasterKey::generate()?;
                write_key_file(&*backend, &master, passphrase, *kdf, &id)?;
                (Some(master), None)
            }
            EncryptionInit::DataKey { key, kms } => {
                (Some(MasterKey::from_bytes(*key)), kms.clone())
            }
        };
        let mut config = RepoConfig {
            format: FORMAT_NAME.to_owned(),
            version: FORMAT_VERSION,
            id: id.clone(),
            created: now,
            chunk_size: CHUNK_SIZE,
            segment_blocks: options.segment_blocks,
            hash: if master.is_some() {
                HashAlgorithm::HmacSha256
            } else {
                HashAlgorithm::Sha256
            },
            compression: options.compression,
            encryption: master.as_ref().map(|m| EncryptionConfig {
                cipher: "xchacha20poly1305".to_owned(),
                key_derivation: "hkdf-sha256".to_owned(),
                key_check: m.key_check_for(&id, FORMAT_VERSION),
                kms,
                config_mac: None,
            }),
        };
        if let (Some(master), Some(_)) = (&master, &config.encryption) {
            let mac = master.config_mac(&id, &config.canonical_bytes());
            config.encryption.as_mut().expect("checked").config_mac = Some(mac);
        }
        let json = serde_json::to_vec_pretty(&config).expect("serialisable");
        if !backend.create(CONFIG_NAME, &json)? {
            return Err(Error::AlreadyInitialized {
                location: backend.location(),
            });
        }
        Ok(Repository::assemble(backend, config, master))
    }

    /// Reads and checks the `config` object without opening the repository (the AWS layer
    /// reads `encryption.kms` from it to ask KMS for the data key).
    ///
    /// The config is not authenticated yet: [`Repository::open`] checks it against the key.
    pub fn read_config(backend: &dyn Backend) -> Result<RepoConfig> {
        let bytes = match backend.read_at_most(CONFIG_NAME, MAX_CONFIG_LEN) {
            Ok(bytes) => bytes,
            Err(e) if e.is_not_found() => {
                return Err(Error::NotARepository {
                    location: backend.location(),
                })
            }
            Err(e) => return Err(e.into()),
        };
        RepoConfig::decode(&bytes)
    }
}

impl RepoConfig {
    /// Parses and checks a `config` object's bytes (at most [`MAX_CONFIG_LEN`]): format,
    /// version, and that every parameter is one this crate supports.
    pub fn decode(bytes: &[u8]) -> Result<RepoConfig> {
        if bytes.len() as u64 > MAX_CONFIG_LEN {
            return Err(Error::InvalidConfig {
                reason: format!("larger than {MAX_CONFIG_LEN} bytes"),
            });
        }
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| Error::InvalidConfig {
                reason: format!("not JSON: {e}"),
            })?;
        if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT_NAME) {
            return Err(Error::InvalidConfig {
                reason: format!("`format` is not {FORMAT_NAME:?}"),
            });
        }
        // Check the version before the rest, so a newer format gets the right message.
        match value.get("version").and_then(|v| v.as_u64()) {
            Some(v)
                if (u64::from(OLDEST_FORMAT_VERSION)..=u64::from(FORMAT_VERSION)).contains(&v) => {}
            Some(v) => {
                return Err(Error::UnsupportedVersion {
                    found: u32::try_from(v).unwrap_or(u32::MAX),
                    supported: FORMAT_VERSION,
                })
            }
            None => {
                return Err(Error::InvalidConfig {
                    reason: "`version` is missing".to_owned(),
                })
            }
        }
        let config: RepoConfig =
            serde_json::from_value(value).map_err(|e| Error::InvalidConfig {
                reason: e.to_string(),
            })?;
        let invalid = |reason: String| Err(Error::InvalidConfig { reason });
        if config.chunk_size != CHUNK_SIZE {
            return invalid(format!(
                "chunk_size {} is not {CHUNK_SIZE}",
                config.chunk_size
            ));
        }
        if config.segment_blocks == 0 || config.segment_blocks > MAX_SPAN {
            return invalid(format!(
                "segment_blocks {} is out of range",
                config.segment_blocks
            ));
        }
        if config.id.len() != 32 || hex::decode(&config.id).is_err() {
            return invalid("`id` is not 32 hex digits".to_owned());
        }
        match (&config.encryption, config.hash) {
            (None, HashAlgorithm::Sha256) => {}
            (Some(e), HashAlgorithm::HmacSha256)
                if e.cipher == "xchacha20poly1305" && e.key_derivation == "hkdf-sha256" => {}
            _ => return invalid("unknown or inconsistent hash/encryption settings".to_owned()),
        }
        if let Some(e) = &config.encryption {
            if config.version >= 2 && e.config_mac.is_none() {
                // Stripping the MAC is how a forged version-2 config would get past open.
                return Err(Error::ConfigNotTrusted {
                    reason: "it is an encrypted version-2 config without `encryption.config_mac`"
                        .to_owned(),
                });
            }
        }
        Ok(config)
    }
}

impl Repository {
    /// Opens an existing repository, and checks that its config can be trusted:
    ///
    /// * an unencrypted config is refused when credentials were given (a passphrase set for
    ///   this repository means it was encrypted), when `keys/` holds key files, or when one of
    ///   the [`PROBE_MANIFESTS`] newest manifests is encrypted: each means an encrypted
    ///   repository's config was replaced, and archives would be written in plaintext;
    /// * an encrypted config must pass the key check, and from format version 2 its
    ///   `config_mac` must verify under the key;
    /// * the key must open at least one manifest (when there are any; tried newest first, so
    ///   usually one read), so a config whose KMS key or wrapped key was substituted by
    ///   someone who holds their own key is refused instead of encrypting new archives for
    ///   them.
    pub fn open(backend: Arc<dyn Backend>, credentials: Credentials) -> Result<Repository> {
        let config = Repository::read_config(&*backend)?;
        let master = match (&config.encryption, &credentials) {
            (None, Credentials::None) => None,
            (None, _) => return Err(Error::NotEncrypted),
            (Some(_), Credentials::None) => return Err(Error::KeyRequired),
            (Some(encryption), Credentials::DataKey(key)) => {
                let master = MasterKey::from_bytes(*key);
                if master.key_check_for(&config.id, config.version) != encryption.key_check {
                    return Err(Error::WrongKey);
                }
                Some(master)
            }
            (Some(_), Credentials::Passphrase(passphrase)) => {
                Some(unlock_with_passphrase(&*backend, passphrase, &config)?)
            }
        };
        drop(credentials);
        if let (Some(master), Some(encryption)) = (&master, &config.encryption) {
            if let Some(mac) = &encryption.config_mac {
                if !master.verify_config_mac(&config.id, &config.canonical_bytes(), mac) {
                    return Err(Error::ConfigNotTrusted {
                        reason: "its config_mac does not verify under the repository key: a \
                                 field was changed by someone without the key"
                            .to_owned(),
                    });
                }
            }
        }
        let repo = Repository::assemble(backend, config, master);
        repo.check_config_against_objects()?;
        Ok(repo)
    }

    /// See [`Repository::open`]: the config against `keys/` and the newest manifests.
    fn check_config_against_objects(&self) -> Result<()> {
        let backend = &*self.inner.backend;
        if !self.is_encrypted() {
            let keys = crate::backend::list_sorted(backend, KEYS_PREFIX)?;
            if !keys.is_empty() {
                return Err(Error::ConfigNotTrusted {
                    reason: format!(
                        "it says the repository is not encrypted, but keys/ holds {} key \
                         file(s) that wrap an encryption key (first: {})",
                        keys.len(),
                        keys[0].name
                    ),
                });
            }
        }
        let ids = self.list_archive_ids()?;
        let mut failures: Vec<(ArchiveId, String)> = Vec::new();
        // Unencrypted: the newest few tell a swapped config. Encrypted: newest first until one
        // opens (usually the first), so damaged recent manifests do not lock the repository.
        let probe = if self.is_encrypted() {
            ids.len()
        } else {
            PROBE_MANIFESTS
        };
        for id in ids.iter().rev().take(probe) {
            let name = manifest_object_name(id);
            let sealed = match backend.read_at_most(&name, MANIFEST_OBJECT_LIMIT) {
                Ok(sealed) => sealed,
                Err(e) if e.is_not_found() => continue, // forgotten meanwhile
                Err(e @ BackendError::TooLarge { .. }) => {
                    failures.push((id.clone(), e.to_string()));
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let encrypted_object = sealed.first().is_some_and(|h| h & FLAG_ENCRYPTED != 0);
            if !self.is_encrypted() {
                if encrypted_object {
                    return Err(Error::ConfigNotTrusted {
                        reason: format!(
                            "it says the repository is not encrypted, but the manifest of \
                             archive {id} is encrypted"
                        ),
                    });
                }
                continue;
            }
            match self.inner.codec.open(&name, sealed, MAX_MANIFEST_LEN) {
                Ok(_) => return Ok(()),
                Err(reason) => failures.push((id.clone(), reason)),
            }
        }
        if self.is_encrypted() && !failures.is_empty() {
            let (id, reason) = &failures[0];
            return Err(Error::ConfigNotTrusted {
                reason: format!(
                    "its key opens none of the repository's {} manifests (archive {id}: \
                     {reason}): the key the config leads to is not the key of this \
                     repository's archives (a substituted KMS key or wrapped key), or every \
                     manifest is damaged",
                    failures.len()
                ),
            });
        }
        Ok(())
    }

    fn assemble(backend: Arc<dyn Backend>, config: RepoConfig, master: Option<MasterKey>) -> Self {
        let codec = Codec::new(
            master.as_ref().map(|m| m.derive(&config.id)),
            config.compression.level(),
        );
        Repository {
            inner: Arc::new(Inner {
                backend,
                config,
                codec,
                master,
                lock_options: LockOptions::default(),
            }),
        }
    }

    /// The same repository with other lock timings (call before sharing it).
    pub fn with_lock_options(self, lock_options: LockOptions) -> Repository {
        let inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| Inner {
            backend: shared.backend.clone(),
            config: shared.config.clone(),
            codec: shared.codec.clone(),
            master: shared.master.clone(),
            lock_options: shared.lock_options,
        });
        Repository {
            inner: Arc::new(Inner {
                lock_options,
                ..inner
            }),
        }
    }

    /// The repository's config.
    pub fn config(&self) -> &RepoConfig {
        &self.inner.config
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    /// The lock timings in use.
    pub fn lock_options(&self) -> LockOptions {
        self.inner.lock_options
    }

    /// Whether chunks are encrypted (and ids keyed).
    pub fn is_encrypted(&self) -> bool {
        self.inner.codec.encrypted()
    }

    /// Block and maximum chunk size (524288).
    pub fn chunk_size(&self) -> u32 {
        self.inner.config.chunk_size
    }

    /// Adds a passphrase that opens this repository (another `keys/` object); returns the key
    /// object's name. Fails for unencrypted repositories.
    pub fn add_passphrase(&self, passphrase: &str, kdf: KdfParams) -> Result<String> {
        let master = self.inner.master.as_ref().ok_or(Error::NoKeyToProtect)?;
        write_key_file(
            &*self.inner.backend,
            master,
            passphrase,
            kdf,
            &self.inner.config.id,
        )
    }

    /// Takes a repository lock (see [`crate::lock`]).
    pub fn lock(&self, kind: LockKind, purpose: &str) -> Result<RepoLock> {
        RepoLock::acquire(
            self.inner.backend.clone(),
            kind,
            purpose,
            self.inner.lock_options,
        )
        .map(|(lock, _)| lock)
    }

    pub(crate) fn lock_counting_stale(
        &self,
        kind: LockKind,
        purpose: &str,
    ) -> Result<(RepoLock, u64)> {
        RepoLock::acquire(
            self.inner.backend.clone(),
            kind,
            purpose,
            self.inner.lock_options,
        )
    }

    // -----------------------------------------------------------------------------------------
    // Chunks
    // -----------------------------------------------------------------------------------------

    /// The id `data` has in this repository.
    pub fn chunk_id(&self, data: &[u8]) -> ChunkId {
        self.inner.codec.id(data)
    }

    /// Whether chunk `id` is stored.
    pub fn has_chunk(&self, id: &ChunkId) -> Result<bool> {
        Ok(self.inner.backend.exists(&chunk_object_name(id))?)
    }

    /// Stores `data` (at most `chunk_size` bytes) unless a chunk with its id is already
    /// stored. Idempotent and safe to call from many threads.
    pub fn put_chunk(&self, data: &[u8]) -> Result<PutChunk> {
        let chunk_size = self.inner.config.chunk_size;
        if data.len() > chunk_size as usize {
            return Err(Error::ChunkTooLarge {
                len: data.len(),
                chunk_size,
            });
        }
        let id = self.chunk_id(data);
        let (new, stored_len) = self.put_object(&chunk_object_name(&id), data)?;
        Ok(PutChunk {
            id,
            new,
            stored_len,
        })
    }

    /// Seals and create-only writes `plaintext` under `name` unless it exists.
    fn put_object(&self, name: &str, plaintext: &[u8]) -> Result<(bool, u64)> {
        if self.inner.backend.exists(name)? {
            return Ok((false, 0));
        }
        let sealed = self.inner.codec.seal(name, plaintext)?;
        let new = self.inner.backend.create(name, &sealed)?;
        Ok((new, if new { sealed.len() as u64 } else { 0 }))
    }

    /// Encodes `plaintext` (compressed, encrypted) as the object `name` would be stored.
    pub(crate) fn seal_object(&self, name: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        self.inner.codec.seal(name, plaintext)
    }

    /// The most bytes a stored chunk object can have: read it with this limit.
    pub fn chunk_object_limit(&self) -> u64 {
        (self.inner.config.chunk_size as usize + ENVELOPE_OVERHEAD) as u64
    }

    /// The error of a failed read of chunk `id`'s object: [`Error::MissingChunk`],
    /// [`Error::CorruptChunk`] for an object over [`Repository::chunk_object_limit`], else
    /// the backend's error.
    pub fn chunk_read_error(&self, id: &ChunkId, e: BackendError) -> Error {
        match e {
            e if e.is_not_found() => Error::MissingChunk { id: *id },
            e @ BackendError::TooLarge { .. } => Error::CorruptChunk {
                id: *id,
                reason: e.to_string(),
            },
            e => e.into(),
        }
    }

    /// Fetches chunk `id`, decrypting, decompressing and checking its hash: a chunk that
    /// fails any of these (or is larger than a chunk can be) is [`Error::CorruptChunk`], a
    /// missing one [`Error::MissingChunk`].
    pub fn get_chunk(&self, id: &ChunkId) -> Result<Vec<u8>> {
        let name = chunk_object_name(id);
        let sealed = self
            .inner
            .backend
            .read_at_most(&name, self.chunk_object_limit())
            .map_err(|e| self.chunk_read_error(id, e))?;
        self.open_chunk(id, sealed)
    }

    /// Decodes chunk `id` from its stored object `sealed` (read by the caller with
    /// [`Repository::chunk_object_limit`]): decrypts, decompresses and checks its hash.
    pub fn open_chunk(&self, id: &ChunkId, sealed: Vec<u8>) -> Result<Vec<u8>> {
        let name = chunk_object_name(id);
        let data = self
            .inner
            .codec
            .open(&name, sealed, self.inner.config.chunk_size as usize)
            .map_err(|reason| Error::CorruptChunk { id: *id, reason })?;
        let actual = self.chunk_id(&data);
        if actual != *id {
            return Err(Error::CorruptChunk {
                id: *id,
                reason: format!("its content hashes to {actual}"),
            });
        }
        Ok(data)
    }

    // -----------------------------------------------------------------------------------------
    // Block maps
    // -----------------------------------------------------------------------------------------

    /// Largest encoded segment for this repository's span.
    fn max_segment_len(&self) -> usize {
        21 + self.inner.config.segment_blocks as usize * (9 + 32)
    }

    /// Stores a block-map segment; returns its id and whether it was new.
    pub(crate) fn put_segment(&self, segment: &Segment) -> Result<(ChunkId, bool)> {
        let bytes = segment.encode();
        let id = self.chunk_id(&bytes);
        let (new, _) = self.put_object(&blockmap_object_name(&id), &bytes)?;
        Ok((id, new))
    }

    /// Fetches and decodes block-map segment `id`, checking its hash and span.
    pub fn get_segment(&self, id: &ChunkId) -> Result<Segment> {
        let name = blockmap_object_name(id);
        let corrupt = |reason: String| Error::CorruptObject {
            name: name.clone(),
            reason,
        };
        let limit = self.max_segment_len() + ENVELOPE_OVERHEAD;
        let sealed = match self.inner.backend.read_at_most(&name, limit as u64) {
            Ok(sealed) => sealed,
            Err(e @ BackendError::TooLarge { .. }) => return Err(corrupt(e.to_string())),
            Err(e) => return Err(e.into()),
        };
        let bytes = self
            .inner
            .codec
            .open(&name, sealed, self.max_segment_len())
            .map_err(corrupt)?;
        let actual = self.chunk_id(&bytes);
        if actual != *id {
            return Err(corrupt(format!("its content hashes to {actual}")));
        }
        let segment =
            Segment::decode_with_span(&bytes, self.inner.config.segment_blocks).map_err(corrupt)?;
        if segment.span != self.inner.config.segment_blocks {
            return Err(corrupt(format!(
                "span {} differs from the repository's segment_blocks {}",
                segment.span, self.inner.config.segment_blocks
            )));
        }
        if segment.first_index % u64::from(segment.span) != 0
            || segment
                .first_index
                .checked_add(u64::from(segment.span))
                .is_none()
        {
            return Err(corrupt(format!(
                "first index {} is not a multiple of the span {} below 2^64",
                segment.first_index, segment.span
            )));
        }
        Ok(segment)
    }

    // -----------------------------------------------------------------------------------------
    // Manifests
    // -----------------------------------------------------------------------------------------

    /// Writes a manifest (create-only: an existing archive is never replaced).
    pub fn write_manifest(&self, manifest: &Manifest) -> Result<()> {
        let name = manifest_object_name(&manifest.id);
        let json = serde_json::to_vec(manifest).expect("serialisable");
        if json.len() > MAX_MANIFEST_LEN {
            return Err(Error::CorruptObject {
                name,
                reason: format!(
                    "the manifest would have {} bytes, more than readers accept \
                     ({MAX_MANIFEST_LEN}); archive fewer volumes at once",
                    json.len()
                ),
            });
        }
        let sealed = self.inner.codec.seal(&name, &json)?;
        if !self.inner.backend.create(&name, &sealed)? {
            return Err(Error::CorruptObject {
                name,
                reason: "an archive with this id already exists".to_owned(),
            });
        }
        Ok(())
    }

    /// Reads archive `id`'s manifest and checks its structure against the repository
    /// ([`Manifest::check`]): a manifest that fails is [`Error::CorruptObject`], so nothing
    /// restores from it.
    pub fn read_manifest(&self, id: &ArchiveId) -> Result<Manifest> {
        let name = manifest_object_name(id);
        let corrupt = |reason: String| Error::CorruptObject {
            name: name.clone(),
            reason,
        };
        let sealed = match self
            .inner
            .backend
            .read_at_most(&name, MANIFEST_OBJECT_LIMIT)
        {
            Ok(sealed) => sealed,
            Err(e) if e.is_not_found() => {
                return Err(Error::ArchiveNotFound { id: id.to_string() })
            }
            Err(e @ BackendError::TooLarge { .. }) => return Err(corrupt(e.to_string())),
            Err(e) => return Err(e.into()),
        };
        let json = self
            .inner
            .codec
            .open(&name, sealed, MAX_MANIFEST_LEN)
            .map_err(corrupt)?;
        // The version first (without building a JSON tree), so a newer manifest gets the
        // right message.
        #[derive(serde::Deserialize)]
        struct Version {
            version: Option<serde_json::Value>,
        }
        let version = serde_json::from_slice::<Version>(&json)
            .map_err(|e| corrupt(format!("not a JSON object: {e}")))?
            .version;
        match version.as_ref().and_then(|v| v.as_u64()) {
            Some(v) if v == u64::from(MANIFEST_VERSION) => {}
            _ => {
                return Err(corrupt(format!(
                    "manifest version {}, this autosnap reads {MANIFEST_VERSION}",
                    version.map_or("(missing)".to_owned(), |v| v.to_string())
                )))
            }
        }
        let manifest: Manifest =
            serde_json::from_slice(&json).map_err(|e| corrupt(format!("invalid manifest: {e}")))?;
        if manifest.id != *id {
            return Err(corrupt(format!("it claims to be archive {}", manifest.id)));
        }
        manifest
            .check(
                self.inner.config.chunk_size,
                self.inner.config.segment_blocks,
            )
            .map_err(corrupt)?;
        Ok(manifest)
    }

    /// Removes a manifest (used by `forget`).
    pub(crate) fn delete_manifest(&self, id: &ArchiveId) -> Result<()> {
        Ok(self.inner.backend.delete(&manifest_object_name(id))?)
    }

    /// Archive ids in the repository, sorted (by creation time). Objects under `manifests/`
    /// whose names are not archive ids are ignored.
    pub fn list_archive_ids(&self) -> Result<Vec<ArchiveId>> {
        let mut ids = Vec::new();
        self.inner
            .backend
            .list(MANIFESTS_PREFIX, &mut |ObjectInfo { name, .. }| {
                if let Some(id) = name
                    .strip_prefix(MANIFESTS_PREFIX)
                    .and_then(|n| n.parse::<ArchiveId>().ok())
                {
                    ids.push(id);
                }
                Ok(())
            })?;
        ids.sort();
        Ok(ids)
    }

    /// Every archive's manifest, oldest first (by `time`, then id). Fails on the first
    /// manifest that cannot be read; [`Repository::scan_archives`] reads past it.
    pub fn list_archives(&self) -> Result<Vec<Manifest>> {
        let mut manifests = self
            .list_archive_ids()?
            .iter()
            .map(|id| self.read_manifest(id))
            .collect::<Result<Vec<_>>>()?;
        manifests.sort_by(Manifest::chronological);
        Ok(manifests)
    }

    /// Every archive: the manifests that read, oldest first, and those that did not (damaged,
    /// planted or failing their checks), so one bad manifest does not hide the others. Backend
    /// failures other than a damaged object (the storage unreachable) still fail the scan.
    pub fn scan_archives(&self) -> Result<ArchiveScan> {
        let mut scan = ArchiveScan::default();
        for id in self.list_archive_ids()? {
            match self.read_manifest(&id) {
                Ok(manifest) => scan.manifests.push(manifest),
                Err(Error::ArchiveNotFound { .. }) => {} // forgotten meanwhile
                Err(e @ Error::CorruptObject { .. }) => scan.unreadable.push(UnreadableArchive {
                    object: manifest_object_name(&id),
                    id,
                    reason: e.to_string(),
                }),
                Err(e) => return Err(e),
            }
        }
        scan.manifests.sort_by(Manifest::chronological);
        Ok(scan)
    }

    /// The newest readable archive of `lineage` (see [`Manifest::lineage`]): the natural
    /// parent of the next incremental archive. An unreadable manifest is passed over (the
    /// next archive then reads more, it never inherits from what cannot be read).
    pub fn latest_archive(&self, lineage: &str) -> Result<Option<Manifest>> {
        Ok(self
            .scan_archives()?
            .manifests
            .into_iter()
            .rfind(|m| m.lineage() == lineage))
    }

    /// The newest readable archive holding a volume of `volume_lineage` (its volume id, or
    /// snapshot id when it has none), and the volume's index: see
    /// [`crate::manifest::latest_volume`].
    pub fn latest_volume_archive(&self, volume_lineage: &str) -> Result<Option<(Manifest, usize)>> {
        let manifests = self.scan_archives()?.manifests;
        Ok(crate::manifest::latest_volume(&manifests, volume_lineage).map(|(m, i)| (m.clone(), i)))
    }

    /// The compression writers use.
    pub fn compression(&self) -> Compression {
        self.inner.config.compression
    }
}

fn write_key_file(
    backend: &dyn Backend,
    master: &MasterKey,
    passphrase: &str,
    kdf: KdfParams,
    repository_id: &str,
) -> Result<String> {
    let file = KeyFile::wrap(master, passphrase, kdf, repository_id, Utc::now())?;
    let mut random = [0u8; 16];
    crate::crypto::random_bytes(&mut random)?;
    let name = format!("{KEYS_PREFIX}{}", hex::encode(random));
    backend.create(
        &name,
        &serde_json::to_vec_pretty(&file).expect("serialisable"),
    )?;
    Ok(name)
}

/// The master key a passphrase unwraps from one of the `keys/` objects and that passes the
/// config's key check. Key files that cannot be read, or whose key fails the check (one left
/// by an interrupted `init`), are passed over: another key file may open the repository.
fn unlock_with_passphrase(
    backend: &dyn Backend,
    passphrase: &str,
    config: &RepoConfig,
) -> Result<MasterKey> {
    let id = &config.id;
    let key_check = &config
        .encryption
        .as_ref()
        .expect("called for encrypted repositories")
        .key_check;
    let keys = crate::backend::list_sorted(backend, KEYS_PREFIX)?;
    if keys.len() > MAX_KEY_FILES {
        return Err(Error::TooManyKeyFiles {
            count: keys.len(),
            max: MAX_KEY_FILES,
        });
    }
    let mut tried = 0;
    let mut unreadable: Vec<String> = Vec::new();
    let mut failed_check: Vec<String> = Vec::new();
    for key in &keys {
        let file = match backend.read_at_most(&key.name, MAX_KEY_FILE_LEN) {
            Ok(bytes) => KeyFile::decode(&bytes),
            Err(e @ BackendError::TooLarge { .. }) => Err(e.to_string()),
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e.into()),
        };
        let file = match file {
            Ok(file) => file,
            Err(reason) => {
                unreadable.push(format!("{}: {reason}", key.name));
                continue;
            }
        };
        tried += 1;
        if let Some(master) = file.unwrap_key(passphrase, id)? {
            if master.key_check_for(id, config.version) == *key_check {
                return Ok(master);
            }
            failed_check.push(key.name.clone());
        }
    }
    if !failed_check.is_empty() {
        return Err(Error::ConfigNotTrusted {
            reason: format!(
                "the passphrase opens {}, but the key there fails the config's key check \
                 (a key file left by an interrupted `init` would, but then another key file \
                 would open)",
                failed_check.join(", ")
            ),
        });
    }
    if tried == 0 && !unreadable.is_empty() {
        return Err(Error::InvalidConfig {
            reason: format!("no key file could be read: {}", unreadable.join("; ")),
        });
    }
    Err(Error::WrongPassphrase { tried })
}

/// Read limit of a manifest object.
const MANIFEST_OBJECT_LIMIT: u64 = (MAX_MANIFEST_LEN + ENVELOPE_OVERHEAD) as u64;
