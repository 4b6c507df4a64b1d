//! Archives end to end through the real binary against the test bed: repositories on a local
//! directory and on S3, upload and download through EBS direct.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::support::TestBed;
use autosnap_repo::{
    ArchiveSource, Credentials, ImportOptions, LocalBackend, Repository, SourceKind,
};
use sha2::{Digest, Sha256};

const BLOCK: usize = 524_288;

/// Deterministic pseudo-random bytes (xorshift), so failures are reproducible.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// An image: per block, `true` = random data, `false` = zeros; then `tail` extra random bytes.
fn image(dir: &Path, name: &str, layout: &[bool], tail: usize, seed: u64) -> PathBuf {
    let mut data = Vec::new();
    for (i, random) in layout.iter().enumerate() {
        if *random {
            data.extend(noise(seed + i as u64, BLOCK));
        } else {
            data.extend(std::iter::repeat_n(0u8, BLOCK));
        }
    }
    data.extend(noise(seed + 1000, tail));
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap();
    path
}

fn sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Stores `file` in the local repository at `repo` through the library (an archive without AWS).
fn import(repo: &Path, file: &Path, source: &str) {
    let repo = Repository::open(Arc::new(LocalBackend::new(repo)), Credentials::None).unwrap();
    let options = ImportOptions {
        source: Some(ArchiveSource::new(SourceKind::File, source)),
        ..ImportOptions::default()
    };
    repo.import_file(file, options).unwrap();
}

fn run_ok(bed: &TestBed, args: &[&str]) -> String {
    let out = bed.cmd().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "autosnap {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn local_repository_lifecycle() {
    let bed = TestBed::offline();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let repo_s = repo.to_str().unwrap();
    run_ok(&bed, &["repo", "init", repo_s]);
    // A second init is refused.
    bed.cmd().args(["repo", "init", repo_s]).assert().failure();

    let a = image(dir.path(), "a.img", &[true, false, true, true], 0, 1);
    let b = image(dir.path(), "b.img", &[true, false, true, false], 0, 1);
    // Two archives of one source (one lineage); b's blocks are a subset of a's.
    import(&repo, &a, "disk");
    import(&repo, &b, "disk");

    let list = bed.json(&["repo", "list", repo_s]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    for field in ["id", "source", "time", "size_bytes", "new_bytes"] {
        assert!(list[0].get(field).is_some(), "{field} missing: {list:?}");
    }
    assert_eq!(list[0]["source"], "disk");
    assert_eq!(list[0]["new_bytes"], 3 * BLOCK as u64);
    // b shares its blocks with a: nothing new.
    assert_eq!(list[1]["new_bytes"], 0);
    let (first, second) = (list[0]["id"].clone(), list[1]["id"].clone());
    assert!(run_ok(&bed, &["repo", "list", repo_s]).contains("disk"));

    run_ok(&bed, &["repo", "verify", repo_s, "--read-data"]);

    // A forget without rules is a usage error.
    bed.cmd().args(["repo", "forget", repo_s]).assert().code(2);
    // Dry run: the plan, nothing forgotten.
    let plan = bed.json(&["repo", "forget", repo_s, "--keep-last", "1", "--dry-run"]);
    assert_eq!(plan["dry_run"], true);
    let decisions = plan["groups"][0]["decisions"].as_array().unwrap().clone();
    assert_eq!(decisions[0]["id"], second);
    assert_eq!(
        decisions[0]["reasons"],
        serde_json::json!(["last snapshot"])
    );
    assert_eq!(decisions[1]["id"], first);
    assert_eq!(decisions[1]["keep"], false);
    assert_eq!(
        bed.json(&["repo", "list", repo_s])
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let text = run_ok(
        &bed,
        &["repo", "forget", repo_s, "--keep-last", "1", "--dry-run"],
    );
    assert!(text.contains("would forget"), "{text}");

    let plan = bed.json(&["repo", "forget", repo_s, "--keep-last", "1"]);
    assert_eq!(plan["dry_run"], false);
    let list = bed.json(&["repo", "list", repo_s]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], second);

    // gc frees the one chunk only the forgotten archive used.
    let gc = bed.json(&["repo", "gc", repo_s, "--dry-run"]);
    assert_eq!(gc["chunks_unreferenced"], 1, "{gc}");
    assert_eq!(gc["deleted"], 0);
    let gc = bed.json(&["repo", "gc", repo_s]);
    assert!(gc["deleted"].as_u64().unwrap() >= 1, "{gc}");
    let verify = bed.json(&["repo", "verify", repo_s, "--read-data"]);
    assert_eq!(verify["ok"], true);
    assert_eq!(verify["chunks_stored"], 2);
}

#[test]
fn verify_names_corrupt_chunks_and_their_archives() {
    let bed = TestBed::offline();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let repo_s = repo.to_str().unwrap();
    run_ok(&bed, &["repo", "init", repo_s]);
    let a = image(dir.path(), "a.img", &[true, true], 0, 7);
    import(&repo, &a, "a.img");
    let archive = bed.json(&["repo", "list", repo_s])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();

    // Flip a byte in one chunk object.
    let chunk = walk(&repo.join("chunks")).into_iter().next().unwrap();
    let mut bytes = std::fs::read(&chunk).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&chunk, bytes).unwrap();

    // Without --read-data the structure is intact; with it the chunk is found.
    run_ok(&bed, &["repo", "verify", repo_s]);
    let out = bed
        .cmd()
        .args(["repo", "verify", repo_s, "--read-data"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let name = chunk.file_name().unwrap().to_str().unwrap();
    assert!(text.contains("corrupt chunk"), "{text}");
    assert!(text.contains(name), "{text}");
    assert!(text.contains(&archive), "{text}");
    assert!(text.contains("DAMAGED"), "{text}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

#[test]
fn encrypted_repository_needs_its_passphrase() {
    let bed = TestBed::offline();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let repo_s = repo.to_str().unwrap();
    // --encrypt without a passphrase is a usage error.
    bed.cmd()
        .args(["repo", "init", repo_s, "--encrypt"])
        .assert()
        .code(2);
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "correct horse\n").unwrap();
    let pw_s = pw.to_str().unwrap();
    let init = bed.json(&["repo", "init", repo_s, "--encrypt", "--password-file", pw_s]);
    assert_eq!(init["encrypted"], true);
    bed.cmd()
        .env("AUTOSNAP_REPO_PASSWORD", "correct horse")
        .args(["repo", "verify", repo_s])
        .assert()
        .success();
    bed.cmd()
        .env("AUTOSNAP_REPO_PASSWORD", "wrong")
        .args(["repo", "list", repo_s])
        .assert()
        .failure();
    bed.cmd().args(["repo", "list", repo_s]).assert().code(2);
}

#[test]
fn s3_repository_lifecycle() {
    let bed = TestBed::start();
    bed.bucket("autosnap-archives");
    let url = "s3://autosnap-archives/team/repo";
    let init = bed.json(&["repo", "init", url]);
    assert_eq!(init["repository"], url);
    bed.cmd().args(["repo", "init", url]).assert().failure();
    assert_eq!(bed.json(&["repo", "list", url]), serde_json::json!([]));
    assert_eq!(
        bed.json(&["repo", "verify", url, "--read-data"])["ok"],
        true
    );
    assert_eq!(bed.json(&["repo", "gc", url])["deleted"], 0);
    // The objects are under the prefix.
    let keys: Vec<String> = bed.block(async {
        bed.s3()
            .list_objects_v2()
            .bucket("autosnap-archives")
            .send()
            .await
            .unwrap()
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect()
    });
    assert!(keys.contains(&"team/repo/config".to_string()), "{keys:?}");
    // A missing bucket is named.
    let out = bed
        .cmd()
        .args(["repo", "list", "s3://no-such-bucket/x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-bucket"));
}

#[test]
fn upload_download_round_trip() {
    let bed = TestBed::start();
    let dir = tempfile::tempdir().unwrap();
    // Random and zero blocks, and a length that is not a multiple of the block size.
    let layout = [true, false, false, true, true, false, true];
    let src = image(dir.path(), "disk.img", &layout, 12_345, 42);
    let src_bytes = std::fs::read(&src).unwrap();

    let up = bed.json(&[
        "upload",
        src.to_str().unwrap(),
        "--description",
        "round trip",
        "--tag",
        "team=storage",
        "--wait",
        "--concurrency",
        "3",
    ]);
    let snap = up["snapshot_id"].as_str().unwrap().to_string();
    assert_eq!(up["volume_size_gib"], 1);
    assert_eq!(up["blocks_written"], 5); // 4 random + the padded tail
    assert_eq!(up["zero_blocks_skipped"], 3);
    let described = bed.snapshot(&snap);
    assert_eq!(described.state().unwrap().as_str(), "completed");
    assert_eq!(described.volume_size(), Some(1));
    assert!(described
        .tags()
        .iter()
        .any(|t| t.key() == Some("team") && t.value() == Some("storage")));

    let out = dir.path().join("out.img");
    let down = bed.json(&["download", &snap, out.to_str().unwrap()]);
    assert_eq!(down["blocks_read"], 5);
    let got = std::fs::read(&out).unwrap();
    assert_eq!(got.len(), 1 << 30, "the image has the volume's size");
    assert_eq!(sha256(&got[..src_bytes.len()]), sha256(&src_bytes));
    assert!(got[src_bytes.len()..].iter().all(|&b| b == 0));
    // No temp file is left next to it.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");

    // Plain output is just the id.
    let plain = run_ok(&bed, &["upload", src.to_str().unwrap()]);
    assert!(plain.trim().starts_with("snap-"), "{plain}");
}

#[test]
fn download_of_a_missing_snapshot_fails_and_leaves_nothing() {
    let bed = TestBed::start();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.img");
    let result = bed
        .cmd()
        .args(["download", "snap-0123456789abcdef0", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(result.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&result.stderr).contains("snap-0123456789abcdef0"));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// A volume created from `snapshot` and two EC2 snapshots of it (one lineage, same data).
fn lineage_snapshots(bed: &TestBed, snapshot: &str) -> (String, String, String) {
    let ec2 = bed.ec2(crate::support::REGION);
    bed.block(async {
        let volume = ec2
            .create_volume()
            .availability_zone("us-east-1a")
            .snapshot_id(snapshot)
            .send()
            .await
            .unwrap()
            .volume_id()
            .unwrap()
            .to_string();
        let mut snaps = Vec::new();
        for day in ["1", "2"] {
            let s = ec2
                .create_snapshot()
                .volume_id(&volume)
                .tag_specifications(crate::support::tag_spec(
                    aws_sdk_ec2::types::ResourceType::Snapshot,
                    &[("app", "db"), ("day", day)],
                ))
                .send()
                .await
                .unwrap()
                .snapshot_id()
                .unwrap()
                .to_string();
            snaps.push(s);
        }
        (volume, snaps[0].clone(), snaps[1].clone())
    })
}

#[test]
fn archive_incremental_restore_forget_gc_on_s3() {
    let bed = TestBed::start();
    bed.bucket("autosnap-archives");
    let repo = "s3://autosnap-archives/r";
    run_ok(&bed, &["repo", "init", repo]);
    let dir = tempfile::tempdir().unwrap();
    let src = image(
        dir.path(),
        "disk.img",
        &[true, false, true, true, false, true],
        0,
        9,
    );
    let src_bytes = std::fs::read(&src).unwrap();
    let up = bed.json(&["upload", src.to_str().unwrap()]);
    let uploaded = up["snapshot_id"].as_str().unwrap().to_string();
    let (volume, day1, day2) = lineage_snapshots(&bed, &uploaded);

    // Full archive of day 1: every written block is read.
    let a1 = bed.json(&["archive", &day1, "--repo", repo]);
    assert_eq!(a1["blocks_read"], 4, "{a1}");
    assert_eq!(a1["parent"], serde_json::Value::Null);
    assert_eq!(a1["new_bytes"], 4 * BLOCK as u64);
    // Day 2 of the same volume: incremental, ListChangedBlocks reports nothing changed.
    let a2 = bed.json(&["archive", &day2, "--repo", repo]);
    assert_eq!(a2["parent"], a1["archive_id"], "{a2}");
    assert_eq!(a2["parent_snapshot_id"], day1.as_str());
    assert_eq!(a2["blocks_read"], 0, "{a2}");
    assert_eq!(a2["size_bytes"], 4 * BLOCK as u64);
    // The uploaded snapshot is another lineage with the same content: deduplicated.
    let a0 = bed.json(&["archive", &uploaded, "--repo", repo]);
    assert_eq!(a0["blocks_read"], 4);
    assert_eq!(a0["new_bytes"], 0, "{a0}");

    let list = bed.json(&["repo", "list", repo]);
    assert_eq!(list.as_array().unwrap().len(), 3);
    assert_eq!(
        bed.json(&["repo", "verify", repo, "--read-data"])["ok"],
        true
    );

    // Restore day 2 (built incrementally) to a file: byte for byte.
    let out = dir.path().join("restored.img");
    bed.json(&[
        "restore",
        &day2,
        "--repo",
        repo,
        "--to-file",
        out.to_str().unwrap(),
    ]);
    let got = std::fs::read(&out).unwrap();
    assert_eq!(got.len(), 1 << 30);
    assert_eq!(sha256(&got[..src_bytes.len()]), sha256(&src_bytes));
    drop(got);

    // Restore to a new snapshot with the original tags, then download it: same bytes.
    let restored = bed.json(&[
        "restore",
        a2["archive_id"].as_str().unwrap(),
        "--repo",
        repo,
        "--to-snapshot",
    ]);
    let new_snap = restored["snapshot_id"].as_str().unwrap().to_string();
    assert_eq!(restored["blocks_written"], 4);
    let described = bed.snapshot(&new_snap);
    assert_eq!(described.state().unwrap().as_str(), "completed");
    assert!(described
        .tags()
        .iter()
        .any(|t| t.key() == Some("day") && t.value() == Some("2")));
    let down = dir.path().join("down.img");
    bed.json(&["download", &new_snap, down.to_str().unwrap()]);
    let got = std::fs::read(&down).unwrap();
    assert_eq!(sha256(&got[..src_bytes.len()]), sha256(&src_bytes));
    drop(got);

    // Forget day 1 (keep the newest per lineage), gc: day 2 still restores.
    let plan = bed.json(&["repo", "forget", repo, "--keep-last", "1"]);
    let forgotten: Vec<_> = plan["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["decisions"].as_array().unwrap().clone())
        .filter(|d| d["keep"] == false)
        .collect();
    assert_eq!(forgotten.len(), 1);
    // Day 1 and day 2 may carry the same start second in the test bed: either is "older".
    assert!(
        forgotten[0]["id"] == a1["archive_id"] || forgotten[0]["id"] == a2["archive_id"],
        "{plan}"
    );
    assert!(plan["groups"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g["lineage"] == volume.as_str()));
    bed.json(&["repo", "gc", repo]);
    assert_eq!(
        bed.json(&["repo", "verify", repo, "--read-data"])["ok"],
        true
    );
    // The volume id names its newest remaining archive (replacing the earlier restore).
    bed.json(&[
        "restore",
        &volume,
        "--repo",
        repo,
        "--to-file",
        out.to_str().unwrap(),
        "--force",
    ]);
    let got = std::fs::read(&out).unwrap();
    assert_eq!(sha256(&got[..src_bytes.len()]), sha256(&src_bytes));
}

#[test]
fn restore_to_device_overwrites_old_data() {
    let bed = TestBed::start();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let repo_s = repo.to_str().unwrap();
    run_ok(&bed, &["repo", "init", repo_s]);
    let src = image(dir.path(), "disk.img", &[false, true, false, true], 0, 3);
    let src_bytes = std::fs::read(&src).unwrap();
    let snap = bed.json(&["upload", src.to_str().unwrap()])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    bed.json(&["archive", &snap, "--repo", repo_s]);
    // A "device" full of old data.
    let dev = dir.path().join("dev");
    std::fs::write(&dev, vec![0xAAu8; 1 << 30]).unwrap();
    bed.json(&[
        "restore",
        &snap,
        "--repo",
        repo_s,
        "--to-device",
        dev.to_str().unwrap(),
    ]);
    let got = std::fs::read(&dev).unwrap();
    assert_eq!(got.len(), 1 << 30);
    assert_eq!(sha256(&got[..src_bytes.len()]), sha256(&src_bytes));
    assert!(got[src_bytes.len()..].iter().all(|&b| b == 0));
}

#[test]
fn killed_archive_leaves_a_valid_repository_and_resumes() {
    let bed = TestBed::start();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let repo_s = repo.to_str().unwrap();
    run_ok(&bed, &["repo", "init", repo_s]);
    let layout = vec![true; 160]; // 80 MiB of random blocks
    let src = image(dir.path(), "big.img", &layout, 0, 11);
    let snap = bed.json(&["upload", src.to_str().unwrap()])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::remove_file(&src).unwrap();

    // Kill -9 once some chunks are stored.
    let mut child = bed
        .std_cmd()
        .args(["archive", &snap, "--repo", repo_s, "--concurrency", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let chunks = repo.join("chunks");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    // Complete chunk objects only: a write in flight is a `.tmp-…` file.
    let complete = |dir: &Path| {
        walk(dir)
            .into_iter()
            .filter(|p| {
                !p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(".tmp-"))
            })
            .count()
    };
    while (!chunks.exists() || complete(&chunks) < 10) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let stored = complete(&chunks);
    assert!((10..160).contains(&stored), "killed after {stored} chunks");

    // No manifest, nothing damaged; the chunks are unreferenced leftovers.
    assert_eq!(bed.json(&["repo", "list", repo_s]), serde_json::json!([]));
    let verify = bed.json(&["repo", "verify", repo_s, "--read-data"]);
    assert_eq!(verify["ok"], true, "{verify}");
    assert_eq!(
        verify["chunks_unreferenced"].as_u64().unwrap(),
        stored as u64
    );

    // Running it again finishes, reusing what was stored.
    let again = bed.json(&["archive", &snap, "--repo", repo_s]);
    assert_eq!(again["blocks_read"], 160);
    assert!(
        again["new_bytes"].as_u64().unwrap() <= (160 - stored as u64) * BLOCK as u64,
        "{again}"
    );
    let verify = bed.json(&["repo", "verify", repo_s, "--read-data"]);
    assert_eq!(verify["ok"], true);
    assert_eq!(verify["chunks_unreferenced"], 0);
}

/// An EBS direct client for the test bed.
fn ebs_client(bed: &TestBed) -> aws_sdk_ebs::Client {
    let conf = aws_sdk_ebs::Config::builder()
        .behavior_version(aws_sdk_ebs::config::BehaviorVersion::latest())
        .region(aws_sdk_ebs::config::Region::new(crate::support::REGION))
        .endpoint_url(bed.endpoint())
        .credentials_provider(aws_sdk_ebs::config::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .build();
    aws_sdk_ebs::Client::from_conf(conf)
}

/// A child of `parent` written through EBS direct: StartSnapshot with ParentSnapshotId, one
/// PutSnapshotBlock per changed block (SHA-256 checksum), CompleteSnapshot with the LINEAR
/// aggregate (SHA-256 over the decoded per-block digests in index order). Returns its id.
fn child_snapshot(bed: &TestBed, parent: &str, changes: &[(u64, Vec<u8>)]) -> String {
    use autosnap_aws::ebs::{block_checksum, LinearChecksum};
    use aws_sdk_ebs::types::{ChecksumAggregationMethod, ChecksumAlgorithm};
    let ebs = ebs_client(bed);
    let mut changes = changes.to_vec();
    changes.sort_by_key(|(index, _)| *index);
    bed.block(async {
        let id = ebs
            .start_snapshot()
            .volume_size(1)
            .parent_snapshot_id(parent)
            .description("child")
            .send()
            .await
            .unwrap()
            .snapshot_id()
            .unwrap()
            .to_string();
        let mut linear = LinearChecksum::default();
        for (index, data) in &changes {
            let (checksum, digest) = block_checksum(data);
            linear.push(&digest);
            ebs.put_snapshot_block()
                .snapshot_id(&id)
                .block_index(*index as i32)
                .block_data(aws_sdk_ebs::primitives::ByteStream::from(data.clone()))
                .data_length(BLOCK as i32)
                .checksum(checksum)
                .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
                .send()
                .await
                .unwrap();
        }
        let status = ebs
            .complete_snapshot()
            .snapshot_id(&id)
            .changed_blocks_count(changes.len() as i32)
            .checksum(linear.finish())
            .checksum_algorithm(ChecksumAlgorithm::ChecksumAlgorithmSha256)
            .checksum_aggregation_method(ChecksumAggregationMethod::ChecksumAggregationLinear)
            .send()
            .await
            .unwrap();
        assert_eq!(status.status().map(|s| s.as_str()), Some("completed"));
        id
    })
}

#[test]
fn child_snapshot_archive_reads_only_the_changed_blocks() {
    let bed = TestBed::start();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let repo_s = repo.to_str().unwrap();
    run_ok(&bed, &["repo", "init", repo_s]);
    // The parent: 8 blocks, 6 of them written.
    let layout = [true, true, false, true, true, true, false, true];
    let src = image(dir.path(), "parent.img", &layout, 0, 21);
    let parent = bed.json(&["upload", src.to_str().unwrap()])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    // The child: block 1 rewritten, block 3 zeroed, block 6 (absent in the parent) written,
    // block 10 appended; the rest inherited.
    let changes = vec![
        (1u64, noise(501, BLOCK)),
        (3, vec![0u8; BLOCK]),
        (6, noise(506, BLOCK)),
        (10, noise(510, BLOCK)),
    ];
    let child = child_snapshot(&bed, &parent, &changes);
    let mut expected = std::fs::read(&src).unwrap();
    expected.resize(11 * BLOCK, 0);
    for (index, data) in &changes {
        let at = *index as usize * BLOCK;
        expected[at..at + BLOCK].copy_from_slice(data);
    }

    // Both were written through EBS direct (no volume): one --lineage chains them.
    let a1 = bed.json(&["archive", &parent, "--repo", repo_s, "--lineage", "disk"]);
    assert_eq!(a1["blocks_read"], 6, "{a1}");
    assert_eq!(a1["lineage"], "disk");
    let a2 = bed.json(&["archive", &child, "--repo", repo_s, "--lineage", "disk"]);
    assert_eq!(a2["parent"], a1["archive_id"], "{a2}");
    assert_eq!(a2["parent_snapshot_id"], parent.as_str());
    // Only the changed blocks were read: ListChangedBlocks, then GetSnapshotBlock for each.
    assert_eq!(a2["blocks_read"], 4, "{a2}");
    assert_eq!(a2["bytes_read"], 4 * BLOCK as u64);
    // Three of them are new content; the zeroed one is recorded, not stored.
    assert_eq!(a2["new_chunks"], 3, "{a2}");
    assert_eq!(a2["new_bytes"], 3 * BLOCK as u64);
    // Present blocks: 6 inherited or rewritten + block 6 + block 10 (block 3 now zeros).
    assert_eq!(a2["size_bytes"], 8 * BLOCK as u64);

    // The child restores to the child's bytes.
    let out = dir.path().join("child.img");
    bed.json(&[
        "restore",
        a2["archive_id"].as_str().unwrap(),
        "--repo",
        repo_s,
        "--to-file",
        out.to_str().unwrap(),
    ]);
    let got = std::fs::read(&out).unwrap();
    assert_eq!(got.len(), 1 << 30);
    assert_eq!(sha256(&got[..expected.len()]), sha256(&expected));
    assert!(got[expected.len()..].iter().all(|&b| b == 0));
    drop(got);
    // And so does the parent, untouched by the child.
    bed.json(&[
        "restore",
        a1["archive_id"].as_str().unwrap(),
        "--repo",
        repo_s,
        "--to-file",
        out.to_str().unwrap(),
        "--force",
    ]);
    let parent_bytes = std::fs::read(&src).unwrap();
    let got = std::fs::read(&out).unwrap();
    assert_eq!(sha256(&got[..parent_bytes.len()]), sha256(&parent_bytes));
    assert_eq!(
        bed.json(&["repo", "verify", repo_s, "--read-data"])["ok"],
        true
    );
}

/// One AWS context per process: a command that opens a KMS-encrypted S3 repository and reads
/// EBS (the repository's backend, the KMS data key, the archive itself) assumes its role and
/// asks STS who it is once, counted at the test bed.
#[test]
fn one_aws_context_per_process() {
    let bed = TestBed::start();
    bed.bucket("autosnap-archives");
    bed.create_role_trusting(crate::support::ACCOUNT, "autosnap", crate::support::ACCOUNT);
    bed.write_config(
        "autosnap.toml",
        &format!(
            "[aws]\nrole_arn = \"arn:aws:iam::{}:role/autosnap\"\n",
            crate::support::ACCOUNT
        ),
        0o600,
    );
    let key = bed.kms_key(None);
    let repo = "s3://autosnap-archives/kms";
    run_ok(&bed, &["repo", "init", repo, "--kms-key", &key]);
    let dir = tempfile::tempdir().unwrap();
    let src = image(dir.path(), "disk.img", &[true, false, true], 0, 3);
    let up = bed.json(&["upload", src.to_str().unwrap(), "--wait"]);
    let snapshot = up["snapshot_id"].as_str().unwrap().to_string();

    let sts = |calls: &std::collections::BTreeMap<(String, String), u64>, action: &str| {
        calls
            .get(&("sts".to_string(), action.to_string()))
            .copied()
            .unwrap_or(0)
    };
    let before = bed.calls();
    let archived = bed.json(&["archive", &snapshot, "--repo", repo]);
    assert_eq!(archived["blocks_read"], 2, "{archived}");
    let after = bed.calls();
    assert_eq!(
        sts(&after, "AssumeRole") - sts(&before, "AssumeRole"),
        1,
        "the role is assumed once: {after:?}"
    );
    assert!(
        sts(&after, "GetCallerIdentity") - sts(&before, "GetCallerIdentity") <= 1,
        "who the credentials are is asked at most once: {after:?}"
    );
}
