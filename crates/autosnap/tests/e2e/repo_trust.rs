//! A hostile bucket, through the real binary: someone who can write the repository's storage
//! but holds no key swaps the config or damages a manifest. Every command refuses what it
//! cannot trust, names the object, and carries on only where that is safe.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::support::TestBed;
use autosnap_repo::{
    ArchiveSource, Credentials, EncryptionInit, ImportOptions, InitOptions, KmsWrappedKey,
    LocalBackend, MemoryBackend, Repository, SourceKind,
};

const BLOCK: usize = 524_288;

/// An image of `blocks` blocks of a byte pattern from `seed`.
fn image(dir: &Path, name: &str, blocks: usize, seed: u8) -> PathBuf {
    let data: Vec<u8> = (0..blocks * BLOCK)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i / 4096) as u8)
        .collect();
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap();
    path
}

/// Archives `file` as source `source` through the library.
fn import(repo: &Path, credentials: Credentials, file: &Path, source: &str) -> String {
    let repo = Repository::open(Arc::new(LocalBackend::new(repo)), credentials).unwrap();
    let options = ImportOptions {
        source: Some(ArchiveSource::new(SourceKind::File, source)),
        ..ImportOptions::default()
    };
    repo.import_file(file, options).unwrap().id.to_string()
}

/// Every file under `dir`, relative, sorted.
fn objects(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn write_json(path: &Path, value: &serde_json::Value) {
    std::fs::write(path, serde_json::to_vec_pretty(value).unwrap()).unwrap();
}

/// Runs autosnap; returns (exit code, stderr).
fn run(bed: &TestBed, password: Option<&str>, args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = bed.std_cmd();
    if let Some(p) = password {
        cmd.env("AUTOSNAP_REPO_PASSWORD", p);
    }
    let out = cmd.args(args).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_encrypted_repository_whose_config_was_made_unencrypted_is_refused_by_every_command() {
    let bed = TestBed::offline();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let repo_s = repo.to_str().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "correct horse\n").unwrap();
    bed.json(&[
        "repo",
        "init",
        repo_s,
        "--encrypt",
        "--password-file",
        pw.to_str().unwrap(),
    ]);
    let img = image(dir.path(), "disk.img", 3, 1);
    let id = import(
        &repo,
        Credentials::Passphrase("correct horse".into()),
        &img,
        "disk",
    );

    // The swap: same id, no encryption.
    let mut config = read_json(&repo.join("config"));
    config.as_object_mut().unwrap().remove("encryption");
    config["hash"] = "sha256".into();
    write_json(&repo.join("config"), &config);
    let before = objects(&repo);

    let out = dir.path().join("out.img");
    let out_s = out.to_str().unwrap();
    let commands: Vec<Vec<&str>> = vec![
        vec!["repo", "list", repo_s],
        vec!["repo", "verify", repo_s],
        vec!["repo", "forget", repo_s, "--keep-last", "1"],
        vec!["repo", "gc", repo_s],
        vec!["archive", "snap-0123456789abcdef0", "--repo", repo_s],
        vec!["restore", &id, "--repo", repo_s, "--to-file", out_s],
    ];
    for args in &commands {
        // With the passphrase still set, as it is for this repository.
        let (code, err) = run(&bed, Some("correct horse"), args);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(
            err.contains("says it is not encrypted, but a passphrase or key was given"),
            "{args:?}: {err}"
        );
        // Without it: the key files left in keys/ give the swap away.
        let (code, err) = run(&bed, None, args);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(err.contains("cannot be trusted"), "{args:?}: {err}");
        assert!(err.contains("keys/"), "{args:?}: {err}");
    }
    // Nothing was written, deleted or restored.
    assert_eq!(objects(&repo), before);
    assert!(!out.exists());
}

#[test]
fn one_unreadable_manifest_does_not_block_list_forget_or_restore_but_stops_gc() {
    let bed = TestBed::offline();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let repo_s = repo.to_str().unwrap();
    bed.json(&["repo", "init", repo_s]);
    let a = image(dir.path(), "a.img", 2, 1);
    let b = image(dir.path(), "b.img", 2, 2);
    let good = import(&repo, Credentials::None, &a, "disk-a");
    let bad = import(&repo, Credentials::None, &b, "disk-b");
    let bad_object = format!("manifests/{bad}");
    std::fs::write(repo.join(&bad_object), b"\x00{ damaged").unwrap();

    // list: the readable archive, and a warning naming the other.
    let out = bed
        .cmd()
        .args(["repo", "list", repo_s, "-o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], good.as_str());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&bad) && err.contains("cannot be read"),
        "{err}"
    );

    // verify: damaged, naming the object.
    let (code, _) = run(&bed, None, &["repo", "verify", repo_s]);
    assert_eq!(code, Some(1));
    let verify = {
        let out = bed
            .cmd()
            .args(["repo", "verify", repo_s, "-o", "json"])
            .output()
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    assert_eq!(verify["bad_manifests"][0]["object"], bad_object.as_str());

    // restore by id of the readable archive works; by a source name it refuses rather than
    // fall back to an older archive when the newest may be the unreadable one.
    let out = dir.path().join("out.img");
    let out_s = out.to_str().unwrap();
    bed.json(&["restore", &good, "--repo", repo_s, "--to-file", out_s]);
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&a).unwrap());
    let other = dir.path().join("other.img");
    let (code, err) = run(
        &bed,
        None,
        &[
            "restore",
            "disk-b",
            "--repo",
            repo_s,
            "--to-file",
            other.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&bad) && err.contains("give the id"), "{err}");
    assert!(!other.exists());

    // forget judges the readable archives and leaves the other alone.
    let plan = bed.json(&["repo", "forget", repo_s, "--keep-last", "1"]);
    assert_eq!(plan["unreadable"][0]["id"], bad.as_str());
    assert!(repo.join(&bad_object).exists());

    // gc refuses and deletes nothing: the unreadable archive may need its chunks.
    let before = objects(&repo);
    let (code, err) = run(&bed, None, &["repo", "gc", repo_s]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&bad_object), "{err}");
    assert!(err.contains("gc stopped and deleted nothing"), "{err}");
    assert_eq!(objects(&repo), before);
}

#[test]
fn a_manifest_that_would_truncate_a_restore_is_refused_before_the_file_is_written() {
    let bed = TestBed::offline();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let repo_s = repo.to_str().unwrap();
    bed.json(&["repo", "init", repo_s]);
    let img = image(dir.path(), "disk.img", 3, 7);
    let id = import(&repo, Credentials::None, &img, "disk");
    // size_bytes cut to one block: the restore would silently drop two.
    let path = repo.join(format!("manifests/{id}"));
    let library = Repository::open(Arc::new(LocalBackend::new(&repo)), Credentials::None).unwrap();
    let read = library.read_manifest(&id.parse().unwrap()).unwrap();
    let mut manifest = serde_json::to_value(&read).unwrap();
    manifest["volumes"][0]["size_bytes"] = (BLOCK as u64).into();
    let mut tampered = vec![0u8];
    tampered.extend(serde_json::to_vec(&manifest).unwrap());
    std::fs::write(&path, tampered).unwrap();

    let out = dir.path().join("out.img");
    let (code, err) = run(
        &bed,
        None,
        &[
            "restore",
            &id,
            "--repo",
            repo_s,
            "--to-file",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("manifests/{id}")), "{err}");
    assert!(err.contains("in a segment of 1 indexes"), "{err}");
    assert!(!out.exists());
}

// ---- KMS ----------------------------------------------------------------------------------

fn hex_decode(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_kms_repository_binds_its_key_to_the_repository_and_refuses_a_substituted_key() {
    let bed = TestBed::start();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let repo_s = repo.to_str().unwrap();
    bed.kms_key(Some("alias/mine"));
    let init = bed.json(&["repo", "init", repo_s, "--kms-key", "alias/mine"]);
    let id = init["id"].as_str().unwrap().to_string();
    let config = read_json(&repo.join("config"));
    let blob = hex_decode(config["encryption"]["kms"]["ciphertext"].as_str().unwrap());

    // The wrapped key opens only with the encryption context that names this repository.
    let kms = bed.kms();
    let decrypt = |context: Option<(&str, &str)>| {
        let mut request = kms
            .decrypt()
            .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(blob.clone()));
        if let Some((k, v)) = context {
            request = request.encryption_context(k, v);
        }
        bed.block(request.send()).ok()
    };
    let key = decrypt(Some(("autosnap:repository", &id))).expect("decrypts with its context");
    let key: [u8; 32] = key.plaintext().unwrap().as_ref().try_into().unwrap();
    assert!(decrypt(None).is_none(), "decrypted without its context");
    assert!(
        decrypt(Some(("autosnap:repository", &"0".repeat(32)))).is_none(),
        "decrypted for another repository"
    );

    // An archive, so that the repository has something the real key opens.
    let img = image(dir.path(), "disk.img", 2, 3);
    import(&repo, Credentials::DataKey(key), &img, "disk");
    assert_eq!(
        bed.json(&["repo", "list", repo_s])
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // The attacker: a KMS key of their own that the victim may use, a data key under it bound
    // to this repository's id, and a config that is valid in every way for that key.
    let theirs = bed.kms_key(Some("alias/theirs"));
    let generated = bed
        .block(
            kms.generate_data_key()
                .key_id(&theirs)
                .key_spec(aws_sdk_kms::types::DataKeySpec::Aes256)
                .encryption_context("autosnap:repository", &id)
                .send(),
        )
        .unwrap();
    let their_key: [u8; 32] = generated.plaintext().unwrap().as_ref().try_into().unwrap();
    let forged = Arc::new(MemoryBackend::new());
    Repository::init_with_id(
        forged.clone(),
        InitOptions {
            encryption: EncryptionInit::DataKey {
                key: their_key,
                kms: Some(KmsWrappedKey::new(
                    theirs.clone(),
                    generated.ciphertext_blob().unwrap().as_ref(),
                )),
            },
            ..InitOptions::default()
        },
        id.clone(),
    )
    .unwrap();
    std::fs::write(repo.join("config"), forged.raw("config").unwrap()).unwrap();
    let before = objects(&repo);

    for args in [
        vec!["repo", "list", repo_s],
        vec!["repo", "verify", repo_s],
        vec!["archive", "snap-0123456789abcdef0", "--repo", repo_s],
    ] {
        let (code, err) = run(&bed, None, &args);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(err.contains("cannot be trusted"), "{args:?}: {err}");
        assert!(
            err.contains("opens none of the repository's 1 manifests"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(
        objects(&repo),
        before,
        "nothing written for the attacker's key"
    );

    // A wrapped key copied from another repository's config fails at KMS: its context names
    // the other repository.
    let other = dir.path().join("other");
    bed.json(&[
        "repo",
        "init",
        other.to_str().unwrap(),
        "--kms-key",
        "alias/mine",
    ]);
    let mut moved = read_json(&other.join("config"));
    moved["encryption"]["kms"]["ciphertext"] = hex_encode(&blob).into();
    write_json(&other.join("config"), &moved);
    let (code, err) = run(&bed, None, &["repo", "list", other.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("KMS did not decrypt its key"), "{err}");
}

#[test]
fn oversized_objects_in_an_s3_repository_are_refused_by_size() {
    let bed = TestBed::start();
    bed.bucket("hostile");
    let url = "s3://hostile/repo";
    bed.json(&["repo", "init", url]);
    let put = |key: &str, body: Vec<u8>| {
        bed.block(
            bed.s3()
                .put_object()
                .bucket("hostile")
                .key(key)
                .body(body.into())
                .send(),
        )
        .unwrap();
    };
    // A manifest name holding 65 MiB: named, passed over by list, refused by verify.
    let id = "20240101T000000Z-0badf00d";
    put(&format!("repo/manifests/{id}"), vec![0u8; 65 << 20]);
    let out = bed
        .cmd()
        .args(["repo", "list", url, "-o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(id) && err.contains("larger than"), "{err}");
    let (code, _) = run(&bed, None, &["repo", "verify", url]);
    assert_eq!(code, Some(1));
    // A config of 100 KiB: refused before it is parsed.
    put("repo/config", vec![b' '; 100 << 10]);
    let (code, err) = run(&bed, None, &["repo", "list", url]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("larger than 65536 bytes"), "{err}");
}

/// A lock object as a process that was killed leaves it: `refreshed` at `refreshed`,
/// expiring 30 minutes later.
fn plant_lock(repo: &Path, name: &str, kind: &str, refreshed: chrono::DateTime<chrono::Utc>) {
    let lock = serde_json::json!({
        "kind": kind, "purpose": "archive", "host": "ip-10-0-0-1", "pid": 4242,
        "process": "ab".repeat(16), "created": refreshed, "refreshed": refreshed,
        "expires": refreshed + chrono::Duration::minutes(30),
    });
    std::fs::create_dir_all(repo.join("locks")).unwrap();
    write_json(&repo.join("locks").join(name), &lock);
}

fn lock_count(repo: &Path) -> usize {
    let locks = repo.join("locks");
    if locks.exists() {
        objects(&locks).len()
    } else {
        0
    }
}

#[test]
fn repo_unlock_removes_stale_locks_and_live_ones_only_when_asked() {
    let bed = TestBed::offline();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let repo_s = repo.to_str().unwrap();
    assert_eq!(run(&bed, None, &["repo", "init", repo_s]).0, Some(0));
    let now = chrono::Utc::now();
    // A killed archive's lock (live for 30 more minutes) and one long expired.
    plant_lock(
        &repo,
        "20240101T000000Z-shared-00000000000000aa",
        "shared",
        now,
    );
    plant_lock(
        &repo,
        "20240101T000000Z-shared-00000000000000bb",
        "shared",
        now - chrono::Duration::hours(3),
    );

    // The live lock keeps gc out, and says whose it is.
    let (code, err) = run(&bed, None, &["repo", "gc", repo_s]);
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("ip-10-0-0-1"), "{err}");

    // Without --remove-all only the stale lock goes.
    let out = bed
        .std_cmd()
        .args(["-o", "json", "repo", "unlock", repo_s])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["removed"], 1, "{report}");
    let locks = report["locks"].as_array().unwrap();
    assert_eq!(locks.len(), 2, "{report}");
    let by_name = |suffix: &str| {
        locks
            .iter()
            .find(|l| l["name"].as_str().unwrap().ends_with(suffix))
            .unwrap()
            .clone()
    };
    assert_eq!(by_name("aa")["stale"], false);
    assert_eq!(by_name("aa")["removed"], false);
    assert_eq!(by_name("aa")["pid"], 4242);
    assert_eq!(by_name("bb")["stale"], true);
    assert_eq!(by_name("bb")["removed"], true);
    assert_eq!(lock_count(&repo), 1);
    assert_ne!(run(&bed, None, &["repo", "gc", repo_s]).0, Some(0));

    // --dry-run removes nothing; --remove-all removes the live lock, and gc runs.
    let out = bed
        .std_cmd()
        .args(["repo", "unlock", repo_s, "--remove-all", "--dry-run"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("would remove"),
        "{text}"
    );
    assert_eq!(lock_count(&repo), 1);
    assert_eq!(
        run(&bed, None, &["repo", "unlock", repo_s, "--remove-all"]).0,
        Some(0)
    );
    assert_eq!(lock_count(&repo), 0);
    let (code, err) = run(&bed, None, &["repo", "gc", repo_s]);
    assert_eq!(code, Some(0), "{err}");

    // A directory that is not a repository is named, not treated as one without locks.
    let (code, err) = run(
        &bed,
        None,
        &["repo", "unlock", dir.path().to_str().unwrap()],
    );
    assert_ne!(code, Some(0));
    assert!(err.contains("not an autosnap repository"), "{err}");
}
