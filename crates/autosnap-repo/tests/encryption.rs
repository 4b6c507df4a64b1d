//! Encryption, keys and the config.

mod common;

use std::sync::Arc;

use autosnap_repo::{
    Backend, Credentials, EncryptionInit, Error, InitOptions, KdfParams, KmsWrappedKey,
    MemoryBackend, Repository,
};
use common::*;

#[test]
fn wrong_passphrase_fails_clearly() {
    let (backend, repo) = memory_repo(passphrase("right"));
    let id = repo.put_chunk(&block(Fill::Random(1))).unwrap().id;
    drop(repo);
    let b: Arc<dyn Backend> = backend.clone();

    let err = Repository::open(b.clone(), Credentials::Passphrase("wrong".into())).unwrap_err();
    assert!(
        matches!(err, Error::WrongPassphrase { tried: 1 }),
        "{err:?}"
    );
    assert!(err.to_string().starts_with("wrong passphrase"), "{err}");

    let err = Repository::open(b.clone(), Credentials::None).unwrap_err();
    assert!(matches!(err, Error::KeyRequired), "{err:?}");
    let err = Repository::open(b.clone(), Credentials::DataKey([0; 32])).unwrap_err();
    assert!(matches!(err, Error::WrongKey), "{err:?}");

    let repo = Repository::open(b.clone(), Credentials::Passphrase("right".into())).unwrap();
    assert_eq!(repo.get_chunk(&id).unwrap(), block(Fill::Random(1)));

    // A second passphrase opens the same repository.
    repo.add_passphrase("second", KdfParams::insecure_for_tests())
        .unwrap();
    let again = Repository::open(b, Credentials::Passphrase("second".into())).unwrap();
    assert_eq!(again.get_chunk(&id).unwrap(), block(Fill::Random(1)));
}

#[test]
fn credentials_for_an_unencrypted_repository_are_refused() {
    let (backend, _repo) = memory_repo(EncryptionInit::None);
    let err = Repository::open(backend, Credentials::Passphrase("x".into())).unwrap_err();
    assert!(matches!(err, Error::NotEncrypted), "{err:?}");
}

#[test]
fn data_key_with_kms_blob() {
    let backend = Arc::new(MemoryBackend::new());
    let kms = KmsWrappedKey {
        key_id: "arn:aws:kms:eu-west-1:111122223333:key/abcd".into(),
        ciphertext: "0a0b0c".into(),
    };
    let key = [42u8; 32];
    let repo = Repository::init(
        backend.clone(),
        InitOptions {
            encryption: EncryptionInit::DataKey {
                key,
                kms: Some(kms.clone()),
            },
            ..options(EncryptionInit::None)
        },
    )
    .unwrap();
    let id = repo.put_chunk(b"hello").unwrap().id;
    // What the AWS layer does: read the config, ask KMS, open with the key.
    let config = Repository::read_config(&*backend).unwrap();
    assert_eq!(config.encryption.unwrap().kms, Some(kms));
    let repo = Repository::open(backend.clone(), Credentials::DataKey(key)).unwrap();
    assert_eq!(repo.get_chunk(&id).unwrap(), b"hello");
    let mut wrong = key;
    wrong[0] ^= 1;
    assert!(matches!(
        Repository::open(backend, Credentials::DataKey(wrong)),
        Err(Error::WrongKey)
    ));
}

#[test]
fn chunk_ids_do_not_reveal_content_when_encrypted() {
    let data = block(Fill::Text(7));
    let plain_sha = sha256(&data);

    let (_b, plain) = memory_repo(EncryptionInit::None);
    assert_eq!(plain.put_chunk(&data).unwrap().id.to_hex(), plain_sha);

    let (backend, encrypted) = memory_repo(passphrase("pw"));
    let put = encrypted.put_chunk(&data).unwrap();
    assert_ne!(put.id.to_hex(), plain_sha);
    assert!(put.new);
    // Idempotent.
    let again = encrypted.put_chunk(&data).unwrap();
    assert_eq!((again.id, again.new, again.stored_len), (put.id, false, 0));
    // Another repository (another key) gives another id.
    let (_b2, other) = memory_repo(passphrase("pw"));
    assert_ne!(other.put_chunk(&data).unwrap().id, put.id);
    // The stored object holds no plaintext.
    let stored = backend.raw(&names(&*backend, "chunks/")[0]).unwrap();
    let needle = &data[..64];
    assert!(!stored.windows(needle.len()).any(|w| w == needle));
    // Manifests are encrypted too.
    let mut writer = encrypted.begin_archive(source("snap-secret-name")).unwrap();
    writer
        .add_volume(autosnap_repo::VolumeSource::ebs(1))
        .unwrap();
    let manifest = writer.finish().unwrap();
    let raw = backend.raw(&format!("manifests/{}", manifest.id)).unwrap();
    assert!(!String::from_utf8_lossy(&raw).contains("snap-secret-name"));
}

#[test]
fn tampered_ciphertext_is_a_corrupt_chunk() {
    let (backend, repo) = memory_repo(passphrase("pw"));
    let id = repo.put_chunk(&block(Fill::Random(3))).unwrap().id;
    let name = names(&*backend, "chunks/")[0].clone();
    let original = backend.raw(&name).unwrap();
    for at in [1, 30, original.len() / 2, original.len() - 1] {
        let mut raw = original.clone();
        raw[at] ^= 0x40;
        backend.put_raw(&name, raw);
        match repo.get_chunk(&id) {
            Err(Error::CorruptChunk { id: bad, reason }) => {
                assert_eq!(bad, id);
                assert!(reason.contains("authentication failed"), "{reason}");
            }
            other => panic!("byte {at}: {other:?}"),
        }
    }
    // A valid object copied under another chunk's name fails too (the name is
    // authenticated).
    let other = repo.put_chunk(&block(Fill::Random(4))).unwrap().id;
    let other_name = format!("chunks/{}/{}", &other.to_hex()[..2], other.to_hex());
    backend.put_raw(&name, backend.raw(&other_name).unwrap());
    assert!(matches!(
        repo.get_chunk(&id),
        Err(Error::CorruptChunk { .. })
    ));
}

#[test]
fn config_versioning_and_init_rules() {
    let backend = Arc::new(MemoryBackend::new());
    assert!(matches!(
        Repository::open(backend.clone(), Credentials::None),
        Err(Error::NotARepository { .. })
    ));
    Repository::init(backend.clone(), options(EncryptionInit::None)).unwrap();
    assert!(matches!(
        Repository::init(backend.clone(), options(EncryptionInit::None)),
        Err(Error::AlreadyInitialized { .. })
    ));
    let mut config: serde_json::Value =
        serde_json::from_slice(&backend.raw("config").unwrap()).unwrap();
    assert_eq!(config["version"], 2);
    assert_eq!(config["chunk_size"], 524288);
    assert_eq!(config["hash"], "sha256");
    // Unknown fields are ignored within a version…
    config["added_later"] = serde_json::json!(true);
    backend.put_raw("config", serde_json::to_vec(&config).unwrap());
    Repository::open(backend.clone(), Credentials::None).unwrap();
    // …a newer version is refused with a clear message.
    config["version"] = serde_json::json!(3);
    backend.put_raw("config", serde_json::to_vec(&config).unwrap());
    let err = Repository::open(backend, Credentials::None).unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnsupportedVersion {
                found: 3,
                supported: 2
            }
        ),
        "{err:?}"
    );
}
