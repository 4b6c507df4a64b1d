//! AMI archives and restores to an AMI, and repositories encrypted with a KMS data key, end to
//! end through the real binary against the test bed.

use std::path::{Path, PathBuf};

use crate::support::TestBed;
use aws_sdk_ec2::types::{BlockDeviceMapping, EbsBlockDevice, ResourceType};
use sha2::{Digest, Sha256};

const BLOCK: usize = 524_288;

/// Deterministic pseudo-random bytes (xorshift).
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

/// An image: per block, `true` = random data (block `i` from seed `seed + i`), `false` = zeros.
fn image(dir: &Path, name: &str, layout: &[bool], seed: u64) -> PathBuf {
    let mut data = Vec::new();
    for (i, random) in layout.iter().enumerate() {
        if *random {
            data.extend(noise(seed + i as u64, BLOCK));
        } else {
            data.extend(std::iter::repeat_n(0u8, BLOCK));
        }
    }
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

/// The first `len` bytes of a file's sha256 (restored images have the volume's full size).
fn sha256_prefix(path: &Path, len: usize) -> String {
    let data = std::fs::read(path).unwrap();
    assert!(data[len..].iter().all(|&b| b == 0), "the rest is zeros");
    sha256(&data[..len])
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

/// Runs autosnap expecting failure; returns (exit code, stderr).
fn run_err(bed: &TestBed, args: &[&str]) -> (Option<i32>, String) {
    let out = bed.cmd().args(args).output().unwrap();
    assert!(
        !out.status.success(),
        "autosnap {args:?} succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn upload(bed: &TestBed, file: &Path) -> String {
    bed.json(&["upload", file.to_str().unwrap()])["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A volume made from `snapshot` (one volume lineage).
fn volume_from(bed: &TestBed, snapshot: &str) -> String {
    let ec2 = bed.ec2(crate::support::REGION);
    bed.block(async {
        ec2.create_volume()
            .availability_zone("us-east-1a")
            .snapshot_id(snapshot)
            .send()
            .await
            .unwrap()
            .volume_id()
            .unwrap()
            .to_string()
    })
}

/// An EC2 snapshot of `volume` tagged `role=<role>`.
fn snapshot_of(bed: &TestBed, volume: &str, role: &str) -> String {
    let ec2 = bed.ec2(crate::support::REGION);
    bed.block(async {
        ec2.create_snapshot()
            .volume_id(volume)
            .tag_specifications(crate::support::tag_spec(
                ResourceType::Snapshot,
                &[("role", role)],
            ))
            .send()
            .await
            .unwrap()
            .snapshot_id()
            .unwrap()
            .to_string()
    })
}

/// Registers an arm64/UEFI AMI named `name`: /dev/xvda from `root` (2 GiB gp3, 3000 IOPS,
/// 125 MiB/s) and /dev/xvdb from `data` (1 GiB gp2), tagged Name=web, team=platform. (The
/// test bed's RegisterImage refuses instance store mappings, so there is none here.)
fn register(bed: &TestBed, name: &str, root: &str, data: &str) -> String {
    let ec2 = bed.ec2(crate::support::REGION);
    bed.block(async {
        ec2.register_image()
            .name(name)
            .description("web server")
            .root_device_name("/dev/xvda")
            .architecture("arm64".into())
            .virtualization_type("hvm")
            .boot_mode("uefi".into())
            .ena_support(true)
            .block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name("/dev/xvda")
                    .ebs(
                        EbsBlockDevice::builder()
                            .snapshot_id(root)
                            .volume_size(2)
                            .volume_type("gp3".into())
                            .iops(3000)
                            .throughput(125)
                            .delete_on_termination(true)
                            .build(),
                    )
                    .build(),
            )
            .block_device_mappings(
                BlockDeviceMapping::builder()
                    .device_name("/dev/xvdb")
                    .ebs(
                        EbsBlockDevice::builder()
                            .snapshot_id(data)
                            .volume_size(1)
                            .volume_type("gp2".into())
                            .delete_on_termination(false)
                            .build(),
                    )
                    .build(),
            )
            .tag_specifications(crate::support::tag_spec(
                ResourceType::Image,
                &[("Name", "web"), ("team", "platform")],
            ))
            .send()
            .await
            .unwrap()
            .image_id()
            .unwrap()
            .to_string()
    })
}

fn tag(tags: &[aws_sdk_ec2::types::Tag], key: &str) -> Option<String> {
    tags.iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
        .map(str::to_string)
}

fn images_named(bed: &TestBed, name: &str) -> usize {
    let ec2 = bed.ec2(crate::support::REGION);
    bed.block(async {
        ec2.describe_images()
            .owners("self")
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("name")
                    .values(name)
                    .build(),
            )
            .send()
            .await
            .unwrap()
            .images()
            .len()
    })
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
fn ami_archive_incremental_restore_to_ami_and_per_device() {
    let bed = TestBed::start();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let repo_s = repo.to_str().unwrap();
    run_ok(&bed, &["repo", "init", repo_s]);

    // Root: blocks 0, 2, 3. Data: blocks 0 (the same content as root's block 0) and 5.
    let root_img = image(dir.path(), "root.img", &[true, false, true, true], 100);
    let data_img = image(
        dir.path(),
        "data.img",
        &[true, false, false, false, false, true],
        100,
    );
    let root_vol = volume_from(&bed, &upload(&bed, &root_img));
    let data_vol = volume_from(&bed, &upload(&bed, &data_img));
    let (root1, data1) = (
        snapshot_of(&bed, &root_vol, "root"),
        snapshot_of(&bed, &data_vol, "data"),
    );
    let ami1 = register(&bed, "web-1", &root1, &data1);

    // Dry run: the plan, nothing stored.
    let plan = bed.json(&["archive", &ami1, "--repo", repo_s, "--dry-run"]);
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["kind"], "image");
    assert_eq!(plan["volumes"].as_array().unwrap().len(), 2, "{plan}");
    assert_eq!(plan["skipped_devices"], serde_json::json!([]));
    assert!(!repo.join("manifests").exists() || walk(&repo.join("manifests")).is_empty());

    // The first archive reads every written block of both volumes; the shared block is
    // stored once.
    let a1 = bed.json(&["archive", &ami1, "--repo", repo_s]);
    assert_eq!(a1["kind"], "image", "{a1}");
    assert_eq!(a1["image_id"], ami1.as_str());
    assert_eq!(a1["parent"], serde_json::Value::Null);
    assert_eq!(a1["blocks_read"], 5, "{a1}");
    assert_eq!(a1["bytes_read"], 5 * BLOCK as u64);
    assert_eq!(a1["new_chunks"], 4, "{a1}");
    assert_eq!(a1["reused_chunks"], 1, "{a1}");
    assert_eq!(a1["new_bytes"], 4 * BLOCK as u64);
    let devices: Vec<&str> = a1["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["device_name"].as_str().unwrap())
        .collect();
    assert_eq!(devices, ["/dev/xvda", "/dev/xvdb"]);

    // A second AMI of the same volumes: incremental per volume, nothing changed.
    let (root2, data2) = (
        snapshot_of(&bed, &root_vol, "root"),
        snapshot_of(&bed, &data_vol, "data"),
    );
    let ami2 = register(&bed, "web-2", &root2, &data2);
    let a2 = bed.json(&["archive", &ami2, "--repo", repo_s]);
    assert_eq!(a2["parent"], a1["archive_id"], "{a2}");
    assert_eq!(a2["blocks_read"], 0, "{a2}");
    assert_eq!(a2["new_bytes"], 0);
    assert_eq!(a2["size_bytes"], 5 * BLOCK as u64);
    for v in a2["volumes"].as_array().unwrap() {
        assert_eq!(v["parent"], a1["archive_id"], "{v}");
    }
    assert_eq!(a2["volumes"][0]["parent_snapshot_id"], root1.as_str());

    // repo list: one row per AMI archive, the AMI as its source, sizes summed.
    let list = bed.json(&["repo", "list", repo_s]);
    let rows = list.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    // (Both AMIs may carry the same creation second, so find the row by id.)
    let row = rows.iter().find(|r| r["id"] == a2["archive_id"]).unwrap();
    assert_eq!(row["kind"], "image");
    assert_eq!(row["source"], ami2.as_str());
    assert_eq!(row["volumes"], 2);
    assert_eq!(
        row["devices"],
        serde_json::json!(["/dev/xvda", "/dev/xvdb"])
    );
    assert_eq!(row["size_bytes"], 5 * BLOCK as u64);
    let table = run_ok(&bed, &["repo", "list", repo_s]);
    assert!(table.contains(&ami2) && table.contains("image"), "{table}");
    assert_eq!(
        bed.json(&["repo", "verify", repo_s, "--read-data"])["ok"],
        true
    );

    // One volume to a file: --device chooses it, and is required.
    let out = dir.path().join("out.img");
    let (code, err) = run_err(
        &bed,
        &[
            "restore",
            &ami2,
            "--repo",
            repo_s,
            "--to-file",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(1));
    assert!(
        err.contains("--device")
            && err.contains("/dev/xvda, /dev/xvdb")
            && err.contains("--to-ami"),
        "{err}"
    );
    let r = bed.json(&[
        "restore",
        &ami2,
        "--repo",
        repo_s,
        "--device",
        "/dev/xvdb",
        "--to-file",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r["device_name"], "/dev/xvdb");
    let data_bytes = std::fs::read(&data_img).unwrap();
    assert_eq!(sha256_prefix(&out, data_bytes.len()), sha256(&data_bytes));
    let (_, err) = run_err(
        &bed,
        &[
            "restore",
            &ami2,
            "--repo",
            repo_s,
            "--device",
            "/dev/xvdz",
            "--to-file",
            out.to_str().unwrap(),
        ],
    );
    assert!(
        err.contains("/dev/xvdz") && err.contains("/dev/xvda"),
        "{err}"
    );

    // --to-ami: the original name is taken (web-2 still exists).
    let (_, err) = run_err(&bed, &["restore", &ami2, "--repo", repo_s, "--to-ami"]);
    assert!(
        err.contains("'web-2'") && err.contains(&ami2) && err.contains("--name"),
        "{err}"
    );
    // A dry run creates nothing.
    let plan = bed.json(&[
        "restore",
        &ami2,
        "--repo",
        repo_s,
        "--to-ami",
        "--name",
        "web-restored",
        "--dry-run",
    ]);
    assert_eq!(plan["dry_run"], true);
    assert_eq!(plan["name"], "web-restored");
    assert_eq!(plan["volumes"].as_array().unwrap().len(), 2);
    assert_eq!(images_named(&bed, "web-restored"), 0);

    let restored = bed.json(&[
        "restore",
        &ami2,
        "--repo",
        repo_s,
        "--to-ami",
        "--name",
        "web-restored",
    ]);
    let new_ami = restored["image_id"].as_str().unwrap().to_string();
    assert!(new_ami.starts_with("ami-"), "{restored}");
    assert_eq!(restored["target"], new_ami.as_str());
    assert_eq!(restored["source_image_id"], ami2.as_str());
    assert_eq!(restored["blocks_written"], 5);
    let image = bed.image(&new_ami).expect("the new AMI exists");
    assert_eq!(image.name(), Some("web-restored"));
    assert_eq!(image.root_device_name(), Some("/dev/xvda"));
    assert_eq!(image.architecture().map(|a| a.as_str()), Some("arm64"));
    assert_eq!(image.boot_mode().map(|b| b.as_str()), Some("uefi"));
    assert_eq!(image.ena_support(), Some(true));
    assert_eq!(image.virtualization_type().map(|v| v.as_str()), Some("hvm"));
    assert_eq!(tag(image.tags(), "Name").as_deref(), Some("web"));
    assert_eq!(tag(image.tags(), "team").as_deref(), Some("platform"));
    assert_eq!(
        tag(image.tags(), "autosnap:managed").as_deref(),
        Some("true")
    );
    assert_eq!(
        tag(image.tags(), "autosnap:restored-from").as_deref(),
        Some(ami2.as_str())
    );
    let mapping = |device: &str| {
        image
            .block_device_mappings()
            .iter()
            .find(|m| m.device_name() == Some(device))
            .unwrap_or_else(|| panic!("no {device} in {image:?}"))
            .clone()
    };
    let xvda = mapping("/dev/xvda");
    let ebs = xvda.ebs().unwrap();
    assert_eq!(ebs.volume_size(), Some(2));
    assert_eq!(ebs.volume_type().map(|t| t.as_str()), Some("gp3"));
    assert_eq!(ebs.iops(), Some(3000));
    // (The test bed's RegisterImage drops Throughput, so it is not checked here.)
    let new_root = ebs.snapshot_id().unwrap().to_string();
    assert_ne!(new_root, root2);
    let xvdb = mapping("/dev/xvdb");
    assert_eq!(
        xvdb.ebs().unwrap().volume_type().map(|t| t.as_str()),
        Some("gp2")
    );
    assert_eq!(xvdb.ebs().unwrap().delete_on_termination(), Some(false));
    // The new snapshots carry the originals' tags and autosnap's.
    let snap = bed.snapshot(&new_root);
    assert_eq!(tag(snap.tags(), "role").as_deref(), Some("root"));
    assert_eq!(
        tag(snap.tags(), "autosnap:managed").as_deref(),
        Some("true")
    );
    // And the root volume's data, byte for byte.
    let down = dir.path().join("down.img");
    bed.json(&["download", &new_root, down.to_str().unwrap()]);
    let root_bytes = std::fs::read(&root_img).unwrap();
    assert_eq!(sha256_prefix(&down, root_bytes.len()), sha256(&root_bytes));

    // --to-ami of a snapshot archive says what to use instead.
    // (A later snapshot of the root volume builds on the AMI archive's root volume.)
    let root3 = snapshot_of(&bed, &root_vol, "root");
    let snap_archive = bed.json(&["archive", &root3, "--repo", repo_s]);
    assert_eq!(snap_archive["kind"], "snapshot");
    assert_eq!(snap_archive["parent"], a2["archive_id"], "{snap_archive}");
    assert_eq!(snap_archive["parent_snapshot_id"], root2.as_str());
    assert_eq!(snap_archive["blocks_read"], 0);
    let (_, err) = run_err(
        &bed,
        &[
            "restore",
            snap_archive["archive_id"].as_str().unwrap(),
            "--repo",
            repo_s,
            "--to-ami",
            "--name",
            "from-a-snapshot",
        ],
    );
    assert!(
        err.contains("not of an AMI") && err.contains("--to-snapshot"),
        "{err}"
    );

    // forget keeps the newest archive of the AMI lineage; gc keeps every chunk it uses.
    bed.json(&["repo", "forget", repo_s, "--keep-last", "1"]);
    // (The two AMIs may carry the same creation second, so either may count as the newest.)
    let list = bed.json(&["repo", "list", repo_s]);
    let images: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "image")
        .collect();
    assert_eq!(images.len(), 1, "{list}");
    assert!(images[0]["id"] == a1["archive_id"] || images[0]["id"] == a2["archive_id"]);
    let kept = images[0]["id"].as_str().unwrap().to_string();
    bed.json(&["repo", "gc", repo_s]);
    let verify = bed.json(&["repo", "verify", repo_s, "--read-data"]);
    assert_eq!(verify["ok"], true, "{verify}");
    bed.json(&[
        "restore",
        &kept,
        "--repo",
        repo_s,
        "--device",
        "/dev/xvda",
        "--to-file",
        out.to_str().unwrap(),
        "--force",
    ]);
    assert_eq!(sha256_prefix(&out, root_bytes.len()), sha256(&root_bytes));
}

#[test]
fn failed_restore_to_ami_deletes_the_snapshots_it_made() {
    let bed = TestBed::start();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let repo_s = repo.to_str().unwrap();
    run_ok(&bed, &["repo", "init", repo_s]);
    // Distinct content per volume, so one volume's chunk can be removed alone.
    let root = volume_from(&bed, &upload(&bed, &image(dir.path(), "r.img", &[true], 1)));
    let data = volume_from(&bed, &upload(&bed, &image(dir.path(), "d.img", &[true], 2)));
    let ami = register(
        &bed,
        "web-x",
        &snapshot_of(&bed, &root, "root"),
        &snapshot_of(&bed, &data, "data"),
    );
    bed.json(&["archive", &ami, "--repo", repo_s]);
    // Lose the data volume's only chunk (its id is the block's SHA-256).
    let data_block = noise(2, BLOCK);
    let id = sha256(&data_block);
    std::fs::remove_file(repo.join("chunks").join(&id[..2]).join(&id)).unwrap();

    let (code, err) = run_err(
        &bed,
        &[
            "restore", &ami, "--repo", repo_s, "--to-ami", "--name", "web-y",
        ],
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("deleted the snapshots just made"), "{err}");
    assert_eq!(images_named(&bed, "web-y"), 0);
    // Every snapshot it names is gone.
    let made: Vec<&str> = err
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.starts_with("snap-"))
        .collect();
    assert!(!made.is_empty(), "{err}");
    let line = err
        .lines()
        .find(|l| l.contains("deleted the snapshots just made"))
        .unwrap();
    for s in line
        .split("deleted the snapshots just made: ")
        .nth(1)
        .unwrap()
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| w.starts_with("snap-"))
    {
        assert!(
            !bed.snapshot_exists(crate::support::REGION, s),
            "{s} is still there: {err}"
        );
    }
}

#[test]
fn killed_ami_archive_leaves_a_valid_repository_and_resumes() {
    let bed = TestBed::start();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let repo_s = repo.to_str().unwrap();
    run_ok(&bed, &["repo", "init", repo_s]);
    let big = image(dir.path(), "big.img", &[true; 80], 500);
    let root = volume_from(&bed, &upload(&bed, &big));
    let data = volume_from(
        &bed,
        &upload(&bed, &image(dir.path(), "d.img", &[true; 80], 900)),
    );
    std::fs::remove_file(&big).unwrap();
    let ami = register(
        &bed,
        "big",
        &snapshot_of(&bed, &root, "root"),
        &snapshot_of(&bed, &data, "data"),
    );

    let mut child = bed
        .std_cmd()
        .args(["archive", &ami, "--repo", repo_s, "--concurrency", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let chunks = repo.join("chunks");
    let complete = |dir: &Path| {
        if !dir.exists() {
            return 0;
        }
        walk(dir)
            .into_iter()
            .filter(|p| {
                !p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(".tmp-"))
            })
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    // Kill it once it is into the second volume.
    while complete(&chunks) < 90 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let stored = complete(&chunks);
    assert!((90..160).contains(&stored), "killed after {stored} chunks");

    assert_eq!(bed.json(&["repo", "list", repo_s]), serde_json::json!([]));
    let verify = bed.json(&["repo", "verify", repo_s, "--read-data"]);
    assert_eq!(verify["ok"], true, "{verify}");
    assert_eq!(verify["chunks_unreferenced"], stored as u64);

    let again = bed.json(&["archive", &ami, "--repo", repo_s]);
    assert_eq!(again["blocks_read"], 160);
    assert!(
        again["new_bytes"].as_u64().unwrap() <= (160 - stored as u64) * BLOCK as u64,
        "{again}"
    );
    let verify = bed.json(&["repo", "verify", repo_s, "--read-data"]);
    assert_eq!(verify["ok"], true);
    assert_eq!(verify["chunks_unreferenced"], 0);
    assert_eq!(verify["chunks_stored"], 160);
}

// ---- repositories encrypted with a KMS data key ----------------------------------

/// KMS Decrypt of a repository's wrapped key, under the encryption context that names it.
fn kms_decrypt(bed: &TestBed, ciphertext_hex: &str, repository_id: &str) -> Vec<u8> {
    let blob: Vec<u8> = (0..ciphertext_hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&ciphertext_hex[i..i + 2], 16).unwrap())
        .collect();
    let kms = bed.kms();
    bed.block(async {
        kms.decrypt()
            .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(blob))
            .encryption_context("autosnap:repository", repository_id)
            .send()
            .await
            .unwrap()
            .plaintext()
            .unwrap()
            .as_ref()
            .to_vec()
    })
}

#[test]
fn kms_encrypted_repository_opens_without_a_passphrase() {
    let bed = TestBed::start();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let repo_s = repo.to_str().unwrap();
    let arn = bed.kms_key(Some("alias/archives"));

    let init = bed
        .cmd()
        .args([
            "-v",
            "repo",
            "init",
            repo_s,
            "--kms-key",
            "alias/archives",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&init.stdout).unwrap();
    assert_eq!(printed["encrypted"], true);
    assert_eq!(printed["kms_key_id"], arn.as_str());
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo.join("config")).unwrap()).unwrap();
    assert_eq!(config["hash"], "hmac-sha256");
    assert_eq!(config["encryption"]["kms"]["key_id"], arn.as_str());
    // No passphrase key files: KMS alone opens it.
    assert!(!repo.join("keys").exists() || walk(&repo.join("keys")).is_empty());

    // The plaintext key appears nowhere in what autosnap printed or stored.
    let key = kms_decrypt(
        &bed,
        config["encryption"]["kms"]["ciphertext"].as_str().unwrap(),
        config["id"].as_str().unwrap(),
    );
    assert_eq!(key.len(), 32);
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let mut seen = String::from_utf8_lossy(&init.stdout).into_owned();
    seen.push_str(&String::from_utf8_lossy(&init.stderr));
    seen.push_str(&std::fs::read_to_string(repo.join("config")).unwrap());
    assert!(!seen.to_lowercase().contains(&hex), "the key leaked");

    // Every command opens it through KMS.
    let img = image(dir.path(), "disk.img", &[true, false, true], 7);
    let snap = upload(&bed, &img);
    let a = bed.json(&["archive", &snap, "--repo", repo_s]);
    assert_eq!(a["blocks_read"], 2);
    assert_eq!(
        bed.json(&["repo", "list", repo_s])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        bed.json(&["repo", "verify", repo_s, "--read-data"])["ok"],
        true
    );
    let out = dir.path().join("out.img");
    let verbose = bed
        .cmd()
        .args(["-v", "restore", &snap, "--repo", repo_s, "--to-file"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(verbose.status.success());
    assert!(!String::from_utf8_lossy(&verbose.stderr)
        .to_lowercase()
        .contains(&hex));
    let bytes = std::fs::read(&img).unwrap();
    assert_eq!(sha256_prefix(&out, bytes.len()), sha256(&bytes));
    bed.json(&["repo", "forget", repo_s, "--keep-last", "1"]);
    bed.json(&["repo", "gc", repo_s]);
    // Chunks are encrypted: the block's plain SHA-256 is not a chunk name.
    let plain_id = sha256(&noise(7, BLOCK));
    assert!(!walk(&repo.join("chunks"))
        .iter()
        .any(|p| p.ends_with(&plain_id)));

    // KMS unreachable: the error says so and names the endpoint.
    let mut cmd = bed.std_cmd();
    let closed = format!("http://127.0.0.1:{}", crate::support::closed_port());
    cmd.env("AWS_ENDPOINT_URL", &closed)
        .env("AWS_MAX_ATTEMPTS", "1")
        .args(["repo", "list", repo_s]);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach") && err.contains("KMS"), "{err}");
}

#[test]
fn kms_key_errors_name_the_key_and_the_fix() {
    let bed = TestBed::start();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let repo_s = repo.to_str().unwrap();
    let (_, err) = run_err(
        &bed,
        &["repo", "init", repo_s, "--kms-key", "alias/no-such-key"],
    );
    assert!(
        err.contains("alias/no-such-key") && err.contains("does not exist"),
        "{err}"
    );
    assert!(!repo.join("config").exists());

    let arn = bed.kms_key(None);
    let kms = bed.kms();
    let key_id = arn.rsplit('/').next().unwrap().to_string();
    bed.block(async { kms.disable_key().key_id(&key_id).send().await.unwrap() });
    let (_, err) = run_err(&bed, &["repo", "init", repo_s, "--kms-key", &arn]);
    assert!(err.contains(&arn) && err.contains("enable"), "{err}");

    // --kms-key and --encrypt are one choice.
    bed.cmd()
        .args(["repo", "init", repo_s, "--kms-key", &arn, "--encrypt"])
        .assert()
        .code(2);
}
