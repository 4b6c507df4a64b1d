//! A hostile bucket: someone who can write the repository's storage but holds no key. Each
//! test plants or edits objects the way such a person could and checks that autosnap refuses
//! (naming the object) instead of writing plaintext, encrypting for someone else, looping,
//! truncating a restore or deleting what an unreadable archive needs.

mod common;

use std::sync::Arc;

use autosnap_repo::config::{new_repository_id, FORMAT_VERSION};
use autosnap_repo::crypto::{KeyFile, MasterKey};
use autosnap_repo::{
    Backend, Credentials, EncryptionInit, Error, InitOptions, KdfParams, KmsWrappedKey, Manifest,
    MemoryBackend, Repository, VolumeSource,
};
use common::*;

/// An archive of a 6-block volume, all blocks present and block 4 all zeros (segments of 4
/// blocks: 0..4 and 4..6); returns its manifest.
fn archive(repo: &Repository, name: &str, seed: u64) -> Manifest {
    archive_blocks(repo, name, seed, &[0, 1, 2, 3, 4, 5])
}

fn archive_blocks(repo: &Repository, name: &str, seed: u64, present: &[u64]) -> Manifest {
    let mut writer = repo.begin_archive(source(name)).unwrap();
    let mut volume = VolumeSource::ebs(0);
    volume.size_bytes = 6 * BS as u64;
    volume.volume_id = Some(format!("vol-{name}"));
    let v = writer.add_volume(volume).unwrap();
    for &i in present {
        let fill = if i == 4 {
            Fill::Zero
        } else {
            Fill::Random(seed + i)
        };
        writer.add_block(v, i, &block(fill)).unwrap();
    }
    writer.finish().unwrap()
}

fn config_json(backend: &MemoryBackend) -> serde_json::Value {
    serde_json::from_slice(&backend.raw("config").unwrap()).unwrap()
}

fn put_json(backend: &MemoryBackend, name: &str, value: &serde_json::Value) {
    backend.put_raw(name, serde_json::to_vec_pretty(value).unwrap());
}

/// The config an attacker writes to turn the repository into an unencrypted one (same id, so
/// nothing else looks different).
fn unencrypted_config(backend: &MemoryBackend) -> serde_json::Value {
    let mut config = config_json(backend);
    config.as_object_mut().unwrap().remove("encryption");
    config["hash"] = "sha256".into();
    config
}

fn data_key(key: [u8; 32], kms_key: &str) -> EncryptionInit {
    EncryptionInit::DataKey {
        key,
        kms: Some(KmsWrappedKey::new(kms_key, &[1, 2, 3])),
    }
}

fn expect_not_trusted(result: autosnap_repo::Result<Repository>, needle: &str) {
    match result {
        Err(Error::ConfigNotTrusted { reason }) => {
            assert!(reason.contains(needle), "{reason}");
        }
        other => panic!("expected ConfigNotTrusted ({needle}), got {other:?}"),
    }
}

#[test]
fn passphrase_repository_with_an_unencrypted_config_is_refused() {
    let (backend, repo) = memory_repo(passphrase("pw"));
    archive(&repo, "a", 1);
    drop(repo);
    put_json(&backend, "config", &unencrypted_config(&backend));
    let b: Arc<dyn Backend> = backend.clone();

    // The user still has the passphrase set: a passphrase for an unencrypted repository.
    let err = Repository::open(b.clone(), Credentials::Passphrase("pw".into())).unwrap_err();
    assert!(matches!(err, Error::NotEncrypted), "{err:?}");
    assert!(err.to_string().contains("plaintext"), "{err}");
    // Without it: the key files still there give the swap away.
    expect_not_trusted(Repository::open(b.clone(), Credentials::None), "keys/");
    // With the key files deleted too: the encrypted manifests do.
    for name in names(&*backend, "keys/") {
        backend.delete(&name).unwrap();
    }
    expect_not_trusted(
        Repository::open(b, Credentials::None),
        "manifest of archive",
    );
    // Nothing was written in plaintext.
    assert_eq!(names(&*backend, "manifests/").len(), 1);
}

#[test]
fn kms_repository_with_an_unencrypted_config_is_refused() {
    let backend = Arc::new(MemoryBackend::new());
    let repo = Repository::init(
        backend.clone(),
        InitOptions {
            encryption: data_key([5; 32], "arn:aws:kms:eu-west-1:111122223333:key/mine"),
            ..options(EncryptionInit::None)
        },
    )
    .unwrap();
    archive(&repo, "a", 1);
    drop(repo);
    put_json(&backend, "config", &unencrypted_config(&backend));
    expect_not_trusted(
        Repository::open(backend, Credentials::None),
        "manifest of archive",
    );
}

#[test]
fn substituted_kms_key_is_refused() {
    // The victim's repository, its master key from their KMS key.
    let backend = Arc::new(MemoryBackend::new());
    let repo = Repository::init(
        backend.clone(),
        InitOptions {
            encryption: data_key([5; 32], "arn:aws:kms:eu-west-1:111122223333:key/mine"),
            ..options(EncryptionInit::None)
        },
    )
    .unwrap();
    archive(&repo, "a", 1);
    let id = repo.config().id.clone();
    drop(repo);

    // The attacker makes a data key under a KMS key they control (granting the victim
    // Decrypt) and writes a config that is valid in every way for that key: same id, key
    // check and MAC computed with the key they know.
    let forged = Arc::new(MemoryBackend::new());
    Repository::init_with_id(
        forged.clone(),
        InitOptions {
            encryption: data_key([6; 32], "arn:aws:kms:eu-west-1:999999999999:key/theirs"),
            ..options(EncryptionInit::None)
        },
        id,
    )
    .unwrap();
    backend.put_raw("config", forged.raw("config").unwrap());

    // What the CLI does: KMS hands back the attacker's key, and open is asked with it.
    expect_not_trusted(
        Repository::open(backend.clone(), Credentials::DataKey([6; 32])),
        "opens none of the repository's 1 manifests",
    );
    // The victim's own key no longer matches the config.
    assert!(matches!(
        Repository::open(backend, Credentials::DataKey([5; 32])),
        Err(Error::WrongKey)
    ));
}

#[test]
fn every_change_to_an_encrypted_config_is_refused() {
    let (backend, repo) = memory_repo(passphrase("pw"));
    let original = config_json(&backend);
    assert_eq!(original["version"], FORMAT_VERSION);
    assert!(original["encryption"]["config_mac"].is_string());
    drop(repo);
    let open = || Repository::open(backend.clone(), Credentials::Passphrase("pw".into()));
    assert!(open().is_ok());

    type Edit = fn(&mut serde_json::Value);
    let edits: [(&str, Edit, &str); 5] = [
        (
            "compression off",
            |c| c["compression"] = serde_json::json!({"algorithm": "none"}),
            "config_mac does not verify",
        ),
        (
            "a KMS key that the CLI would prefer to the passphrase",
            |c| {
                c["encryption"]["kms"] = serde_json::json!({
                    "key_id": "arn:aws:kms:eu-west-1:999999999999:key/theirs",
                    "ciphertext": "00"
                })
            },
            "config_mac does not verify",
        ),
        (
            "the MAC stripped",
            |c| {
                c["encryption"]
                    .as_object_mut()
                    .unwrap()
                    .remove("config_mac");
            },
            "without `encryption.config_mac`",
        ),
        (
            "rewritten as an unauthenticated version 1",
            |c| {
                c["version"] = 1.into();
                c["encryption"]
                    .as_object_mut()
                    .unwrap()
                    .remove("config_mac");
            },
            "fails the config's key check",
        ),
        (
            "another key check",
            |c| c["encryption"]["key_check"] = "00".repeat(32).into(),
            "fails the config's key check",
        ),
    ];
    for (what, edit, needle) in edits {
        let mut config = original.clone();
        edit(&mut config);
        put_json(&backend, "config", &config);
        match open() {
            Err(Error::ConfigNotTrusted { reason }) => {
                assert!(reason.contains(needle), "{what}: {reason}")
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    put_json(&backend, "config", &original);
    assert!(open().is_ok());
}

#[test]
fn version_1_repositories_still_open() {
    // A repository as the previous version wrote it: version 1, v1 key check, no MAC.
    let (backend, repo) = memory_repo(passphrase("pw"));
    let manifest = archive(&repo, "a", 1);
    let master_check = {
        // The v1 key check of the same master key, computed the way a v1 writer did.
        let keys = names(&*backend, "keys/");
        let file = KeyFile::decode(&backend.raw(&keys[0]).unwrap()).unwrap();
        let id = repo.config().id.clone();
        file.unwrap_key("pw", &id).unwrap().unwrap().key_check(&id)
    };
    drop(repo);
    let mut config = config_json(&backend);
    config["version"] = 1.into();
    config["encryption"]["key_check"] = master_check.into();
    config["encryption"]
        .as_object_mut()
        .unwrap()
        .remove("config_mac");
    put_json(&backend, "config", &config);
    let repo = Repository::open(backend.clone(), Credentials::Passphrase("pw".into())).unwrap();
    assert_eq!(repo.config().version, 1);
    assert_eq!(repo.list_archives().unwrap()[0].id, manifest.id);
}

#[test]
fn orphan_key_file_of_an_interrupted_init_does_not_block_open() {
    let backend = Arc::new(MemoryBackend::new());
    let id = new_repository_id().unwrap();
    // The first init wrote its key file and was killed before the config; its name sorts
    // first, so it is tried first.
    let orphan = KeyFile::wrap(
        &MasterKey::generate().unwrap(),
        "pw",
        KdfParams::insecure_for_tests(),
        &id,
        chrono::Utc::now(),
    )
    .unwrap();
    backend.put_raw(
        &format!("keys/{}", "0".repeat(32)),
        serde_json::to_vec(&orphan).unwrap(),
    );
    // The second init, with the same passphrase, completed.
    Repository::init_with_id(backend.clone(), options(passphrase("pw")), id).unwrap();
    assert_eq!(names(&*backend, "keys/").len(), 2);
    let repo = Repository::open(backend, Credentials::Passphrase("pw".into())).unwrap();
    archive(&repo, "a", 1);
}

#[test]
fn key_files_with_hostile_parameters_or_sizes_are_skipped() {
    let (backend, repo) = memory_repo(passphrase("pw"));
    drop(repo);
    let real = names(&*backend, "keys/")[0].clone();
    let mut planted: serde_json::Value =
        serde_json::from_slice(&backend.raw(&real).unwrap()).unwrap();
    // 4 TiB of memory for Argon2id: refused before Argon2 runs.
    planted["params"]["m_cost_kib"] = u32::MAX.into();
    put_json(&backend, &format!("keys/{}", "0".repeat(32)), &planted);
    // A huge key file: refused by size.
    backend.put_raw(&format!("keys/{}", "1".repeat(32)), vec![b' '; 1 << 20]);
    let repo = Repository::open(backend.clone(), Credentials::Passphrase("pw".into())).unwrap();
    drop(repo);

    // Only hostile ones left: the error names them and the bound.
    backend.delete(&real).unwrap();
    let err = Repository::open(backend.clone(), Credentials::Passphrase("pw".into())).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("m_cost_kib 4294967295"), "{text}");
    assert!(text.contains("larger than"), "{text}");

    // Thousands of planted key files would cost an Argon2id run each: refused by count.
    for i in 0..70 {
        backend.put_raw(&format!("keys/{i:032x}"), b"{}".to_vec());
    }
    let err = Repository::open(backend, Credentials::Passphrase("pw".into())).unwrap_err();
    assert!(matches!(err, Error::TooManyKeyFiles { .. }), "{err:?}");
}

// ---- manifests ------------------------------------------------------------------------------

/// Replaces archive `manifest`'s stored manifest (unencrypted repository) with `edit` applied.
fn tamper(backend: &MemoryBackend, manifest: &Manifest, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut value = serde_json::to_value(manifest).unwrap();
    edit(&mut value);
    let mut raw = vec![0u8]; // envelope header: plain, uncompressed
    raw.extend(serde_json::to_vec(&value).unwrap());
    backend.put_raw(&format!("manifests/{}", manifest.id), raw);
}

#[test]
fn structurally_bad_manifests_are_refused_before_a_byte_is_restored() {
    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, Edit, &str); 9] = [
        (
            "block_size 0",
            |m| m["volumes"][0]["block_map"]["block_size"] = 0.into(),
            "block_size 0",
        ),
        (
            "block_size not the chunk size",
            |m| m["volumes"][0]["block_map"]["block_size"] = 4096.into(),
            "block_size 4096",
        ),
        (
            "size_bytes smaller than the data (a silently truncated restore)",
            |m| m["volumes"][0]["size_bytes"] = (BS as u64).into(),
            "4 blocks (0 zero) in a segment of 1 indexes",
        ),
        (
            "segments out of order",
            |m| {
                let segments = m["volumes"][0]["block_map"]["segments"]
                    .as_array_mut()
                    .unwrap();
                segments.swap(0, 1);
            },
            "out of order",
        ),
        (
            "two references to one segment range",
            |m| {
                let segments = m["volumes"][0]["block_map"]["segments"]
                    .as_array_mut()
                    .unwrap();
                segments[1] = segments[0].clone();
            },
            "overlaps",
        ),
        (
            "a first index that is not aligned",
            |m| m["volumes"][0]["block_map"]["segments"][1]["first_index"] = 5.into(),
            "not a multiple",
        ),
        (
            "a first index near 2^64",
            |m| m["volumes"][0]["block_map"]["segments"][1]["first_index"] = (u64::MAX - 3).into(),
            "beyond the volume",
        ),
        (
            "a volume of 2^64 bytes",
            |m| m["volumes"][0]["size_bytes"] = u64::MAX.into(),
            "more than",
        ),
        (
            "more blocks than the segment has indexes",
            |m| m["volumes"][0]["block_map"]["segments"][0]["blocks"] = 5.into(),
            "in a segment of 4 indexes",
        ),
    ];
    for (what, edit, needle) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (backend, repo) = memory_repo(EncryptionInit::None);
        let manifest = archive(&repo, "a", 1);
        tamper(&backend, &manifest, edit);

        // verify names the manifest and what is wrong.
        let report = repo.verify(false).unwrap();
        assert!(!report.is_ok(), "{what}");
        let bad = &report.bad_manifests[0];
        assert_eq!(bad.object, format!("manifests/{}", manifest.id), "{what}");
        assert!(bad.reason.contains(needle), "{what}: {}", bad.reason);

        // restore reads the manifest and refuses before creating the file.
        let err = repo.read_manifest(&manifest.id).unwrap_err();
        assert!(err.to_string().contains(needle), "{what}: {err}");
        // A manifest handed over directly is checked by the reader too.
        let forged: Manifest = {
            let mut value = serde_json::to_value(&manifest).unwrap();
            edit(&mut value);
            serde_json::from_value(value).unwrap()
        };
        let out = dir.path().join("out.img");
        let err = repo.restore_to_file(&forged, 0, &out).unwrap_err();
        assert!(err.to_string().contains(needle), "{what}: {err}");
        assert!(!out.exists(), "{what}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "{what}");
    }
}

#[test]
fn a_segment_that_disagrees_with_its_reference_is_refused() {
    // The second segment holds only block 5; size_bytes is cut to 5 blocks. The manifest
    // alone looks fine (one block in a segment starting inside the volume), the segment does
    // not: its block is past the end, and a restore would silently drop it.
    let (backend, repo) = memory_repo(EncryptionInit::None);
    let manifest = archive_blocks(&repo, "a", 1, &[0, 1, 2, 3, 5]);
    tamper(&backend, &manifest, |m| {
        m["volumes"][0]["size_bytes"] = (5 * BS as u64).into()
    });
    let report = repo.verify(false).unwrap();
    assert!(report.bad_manifests.is_empty(), "{report:?}");
    assert_eq!(report.corrupt_blockmaps.len(), 1, "{report:?}");
    assert!(
        report.corrupt_blockmaps[0]
            .reason
            .contains("beyond the volume's 5 blocks"),
        "{:?}",
        report.corrupt_blockmaps[0]
    );
    assert_eq!(
        report.corrupt_blockmaps[0].archives,
        vec![manifest.id.clone()]
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.img");
    let manifest = repo.read_manifest(&manifest.id).unwrap();
    // What every restore (file, device, snapshot) runs before its first write.
    let err = autosnap_repo::ArchiveReader::new(&repo, manifest.clone())
        .check_block_map(0)
        .unwrap_err();
    assert!(err.to_string().contains("beyond the volume"), "{err}");
    let err = repo.restore_to_file(&manifest, 0, &out).unwrap_err();
    assert!(err.to_string().contains("beyond the volume"), "{err}");
    assert!(!out.exists());
}

#[test]
fn one_unreadable_manifest_blocks_neither_list_nor_archive_nor_forget_but_stops_gc() {
    let (backend, repo) = memory_repo(EncryptionInit::None);
    let good = archive(&repo, "a", 1);
    let bad = archive(&repo, "b", 100);
    // Damage one manifest.
    backend.put_raw(&format!("manifests/{}", bad.id), b"\x00{ not json".to_vec());

    let scan = repo.scan_archives().unwrap();
    assert_eq!(
        scan.manifests.iter().map(|m| &m.id).collect::<Vec<_>>(),
        vec![&good.id]
    );
    assert_eq!(scan.unreadable.len(), 1);
    assert_eq!(scan.unreadable[0].id, bad.id);
    assert_eq!(scan.unreadable[0].object, format!("manifests/{}", bad.id));

    // The next archive of the good lineage still finds its parent.
    assert_eq!(
        repo.latest_archive(&good.lineage()).unwrap().unwrap().id,
        good.id
    );
    archive(&repo, "c", 200);

    // forget judges the readable archives and reports the other, never deleting it.
    let policy = autosnap_core::retention::KeepPolicy {
        last: autosnap_core::retention::Count::N(1),
        ..Default::default()
    };
    let plan = repo.forget(&policy, chrono::Utc::now(), false).unwrap();
    assert_eq!(plan.unreadable.len(), 1);
    assert_eq!(plan.unreadable[0].id, bad.id);
    assert!(backend.raw(&format!("manifests/{}", bad.id)).is_some());

    // gc refuses: the unreadable archive may need chunks nothing else references.
    let objects_before = backend.names().len();
    let err = repo.gc(false).unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&format!("manifests/{}", bad.id)), "{text}");
    assert!(text.contains("gc stopped and deleted nothing"), "{text}");
    assert_eq!(backend.names().len(), objects_before);
}

#[test]
fn damaged_recent_manifests_do_not_lock_an_encrypted_repository() {
    let backend = Arc::new(MemoryBackend::new());
    let repo = Repository::init(
        backend.clone(),
        InitOptions {
            encryption: data_key([5; 32], "arn:aws:kms:eu-west-1:111122223333:key/mine"),
            ..options(EncryptionInit::None)
        },
    )
    .unwrap();
    let manifests: Vec<Manifest> = (0..6).map(|i| archive(&repo, "a", i * 10)).collect();
    drop(repo);
    // The five newest damaged: the oldest still proves the key is this repository's.
    for m in &manifests[1..] {
        let name = format!("manifests/{}", m.id);
        let mut raw = backend.raw(&name).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        backend.put_raw(&name, raw);
    }
    let repo = Repository::open(backend, Credentials::DataKey([5; 32])).unwrap();
    let scan = repo.scan_archives().unwrap();
    assert_eq!(scan.manifests.len(), 1);
    assert_eq!(scan.unreadable.len(), 5);
}
