//! `--dry-run` on every command that creates something: the plan is printed
//! (what would be created, with its tags), the test bed holds nothing new
//! afterwards, and a dry run that must fail exits with the code of the real
//! run that fails the same way.

use crate::support::imds::FakeImds;
use crate::support::{TestBed, REGION};
use predicates::prelude::*;
use serde_json::Value;

/// Everything that a create could leave behind in a region.
#[derive(Debug, PartialEq)]
struct Inventory {
    snapshots: Vec<String>,
    volumes: Vec<String>,
    images: Vec<String>,
}

fn inventory(tb: &TestBed, region: &str) -> Inventory {
    let ec2 = tb.ec2(region);
    tb.block(async {
        let mut snapshots: Vec<String> = ec2
            .describe_snapshots()
            .send()
            .await
            .expect("describe snapshots")
            .snapshots()
            .iter()
            .filter_map(|s| s.snapshot_id().map(String::from))
            .collect();
        let mut volumes: Vec<String> = ec2
            .describe_volumes()
            .send()
            .await
            .expect("describe volumes")
            .volumes()
            .iter()
            .filter_map(|v| v.volume_id().map(String::from))
            .collect();
        let mut images: Vec<String> = ec2
            .describe_images()
            .owners("self")
            .send()
            .await
            .expect("describe images")
            .images()
            .iter()
            .filter_map(|i| i.image_id().map(String::from))
            .collect();
        snapshots.sort();
        volumes.sort();
        images.sort();
        Inventory {
            snapshots,
            volumes,
            images,
        }
    })
}

/// Runs autosnap; returns (exit code, stdout, stderr).
fn run(tb: &TestBed, args: &[&str]) -> (Option<i32>, String, String) {
    let out = tb.cmd().args(args).output().expect("run autosnap");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs a dry run with `-o json`, asserts success, parses the plan.
fn plan(tb: &TestBed, args: &[&str]) -> Value {
    let mut all = vec!["-o", "json"];
    all.extend_from_slice(args);
    all.push("--dry-run");
    let (code, stdout, stderr) = run(tb, &all);
    assert_eq!(code, Some(0), "{args:?}: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("plan is JSON ({e}): {stdout}"))
}

/// The dry run of `args` fails with the same exit code as the real run, and
/// neither created anything.
fn fails_like_the_real_run(tb: &TestBed, args: &[&str], region: &str) {
    let before = inventory(tb, region);
    let mut dry: Vec<&str> = args.to_vec();
    dry.push("--dry-run");
    let (dry_code, _, dry_err) = run(tb, &dry);
    assert_eq!(inventory(tb, region), before, "the dry run created nothing");
    let (real_code, _, real_err) = run(tb, args);
    assert_ne!(real_code, Some(0), "the real run fails: {real_err}");
    assert_eq!(
        dry_code, real_code,
        "{args:?}: dry run said {dry_err:?}, real run said {real_err:?}"
    );
    assert_eq!(
        inventory(tb, region),
        before,
        "the failing run created nothing"
    );
}

fn tag<'a>(record: &'a Value, key: &str) -> Option<&'a str> {
    record["tags"][key].as_str()
}

#[test]
fn snapshot_create_dry_run_of_a_volume_prints_the_plan_and_creates_nothing() {
    let tb = TestBed::start();
    let vol = tb.volume(3, &[("Name", "db"), ("Team", "data")]);
    let before = inventory(&tb, REGION);

    let json = plan(&tb, &["snapshot", "create", &vol, "--tag", "Ticket=OPS-1"]);
    let list = json.as_array().expect("a list of planned snapshots");
    assert_eq!(list.len(), 1, "{json}");
    let p = &list[0];
    assert_eq!(p["dry_run"], true);
    assert_eq!(p["volume_id"], vol.as_str());
    assert_eq!(p["size_gib"], 3);
    assert_eq!(p["region"], REGION);
    assert!(
        p.get("snapshot_id").is_none(),
        "no id for what does not exist: {p}"
    );
    assert_eq!(tag(p, "Name"), Some("db"));
    assert_eq!(tag(p, "Team"), Some("data"));
    assert_eq!(tag(p, "Ticket"), Some("OPS-1"));
    assert_eq!(tag(p, "autosnap:managed"), Some("true"));
    assert_eq!(tag(p, "autosnap:source-volume"), Some(vol.as_str()));
    assert_eq!(inventory(&tb, REGION), before);

    // The table form says what would happen and that nothing did.
    tb.cmd()
        .args(["snapshot", "create", &vol, "--dry-run", "--wait"])
        .assert()
        .success()
        .stdout(predicate::str::contains("would create 1 snapshot(s)"))
        .stdout(predicate::str::contains(vol.as_str()))
        .stdout(predicate::str::contains("dry run: nothing was created"));
    assert_eq!(inventory(&tb, REGION), before);
}

#[test]
fn snapshot_create_dry_run_of_an_instance_lists_every_volume_of_the_set() {
    let tb = TestBed::start();
    let (instance, data_volume) = tb.instance("web");
    let before = inventory(&tb, REGION);

    let json = plan(&tb, &["snapshot", "create", &instance]);
    let list = json.as_array().expect("a list");
    assert!(
        list.iter().any(|p| p["volume_id"] == data_volume.as_str()),
        "the data volume is in the plan: {json}"
    );
    let set_ids: Vec<&str> = list
        .iter()
        .map(|p| tag(p, "autosnap:set-id").expect("set id"))
        .collect();
    assert!(set_ids.windows(2).all(|w| w[0] == w[1]), "one set: {json}");
    for p in list {
        assert_eq!(p["target"], instance.as_str());
        assert_eq!(tag(p, "autosnap:source-instance"), Some(instance.as_str()));
        assert!(p["device_name"].is_string(), "{p}");
    }
    assert_eq!(inventory(&tb, REGION), before);
}

#[test]
fn snapshot_create_dry_run_fails_like_the_real_run() {
    let tb = TestBed::start();
    let vol = tb.volume(1, &[]);
    let missing = "vol-0123456789abcdef0";
    // Nothing can be done: the real run exits 1, so does the dry run.
    fails_like_the_real_run(&tb, &["snapshot", "create", missing], REGION);
    // One of two targets is missing: a partial failure (3) either way. The
    // real run does snapshot the other volume, so compare the dry run only.
    let before = inventory(&tb, REGION);
    let (code, stdout, stderr) = run(&tb, &["snapshot", "create", &vol, missing, "--dry-run"]);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains(missing), "{stderr}");
    assert!(
        stdout.contains(&vol),
        "the plan for the other volume: {stdout}"
    );
    assert_eq!(inventory(&tb, REGION), before);
    let (real, _, _) = run(&tb, &["snapshot", "create", &vol, missing]);
    assert_eq!(real, Some(3));
}

#[test]
fn snapshot_copy_dry_run_prints_the_copy_and_copies_nothing() {
    let tb = TestBed::start();
    let vol = tb.volume(1, &[]);
    let source = tb.snapshot_with_tags(REGION, &vol, &[("Name", "nightly")]);
    let dest = "us-west-2";
    let before = inventory(&tb, dest);

    let json = plan(
        &tb,
        &[
            "snapshot",
            "copy",
            &source,
            "--to-region",
            dest,
            "--encrypt",
        ],
    );
    let list = json.as_array().expect("a list");
    assert_eq!(list.len(), 1, "{json}");
    let p = &list[0];
    assert_eq!(p["dry_run"], true);
    assert_eq!(p["result"], "would_copy");
    assert_eq!(p["snapshot_id"], Value::Null);
    assert_eq!(p["region"], dest);
    assert_eq!(p["encrypted"], true);
    assert_eq!(tag(p, "Name"), Some("nightly"));
    assert_eq!(tag(p, "autosnap:source-snapshot"), Some(source.as_str()));
    assert_eq!(tag(p, "autosnap:source-region"), Some(REGION));
    assert_eq!(inventory(&tb, dest), before);

    fails_like_the_real_run(
        &tb,
        &[
            "snapshot",
            "copy",
            "snap-0123456789abcdef0",
            "--to-region",
            dest,
        ],
        dest,
    );
    // A source that is not completed yet cannot be copied, dry or not.
    let pending = tb.snapshot_with_tags(REGION, &vol, &[("autosnap-testbed:state", "pending")]);
    fails_like_the_real_run(
        &tb,
        &["snapshot", "copy", &pending, "--to-region", dest],
        dest,
    );
}

#[test]
fn volume_create_dry_run_prints_the_volume_and_creates_nothing() {
    let tb = TestBed::start();
    let vol = tb.volume(2, &[]);
    let snap = tb.foreign_snapshot(&vol);
    let before = inventory(&tb, REGION);

    let p = plan(
        &tb,
        &[
            "volume",
            "create",
            "--snapshot",
            &snap,
            "--availability-zone",
            "us-east-1b",
            "--type",
            "gp3",
            "--tag",
            "Name=restored",
        ],
    );
    assert_eq!(p["dry_run"], true);
    assert_eq!(p["snapshot_id"], snap.as_str());
    assert_eq!(p["availability_zone"], "us-east-1b");
    assert_eq!(p["volume_type"], "gp3");
    assert_eq!(p["size_gib"], 2);
    assert_eq!(tag(&p, "Name"), Some("restored"));
    assert_eq!(tag(&p, "autosnap:source-snapshot"), Some(snap.as_str()));
    assert!(p.get("volume_id").is_none(), "{p}");
    assert_eq!(inventory(&tb, REGION), before);

    let create = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["volume", "create", "--availability-zone", "us-east-1a"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let smaller = create(&["--snapshot", &snap, "--size", "1"]);
    let smaller: Vec<&str> = smaller.iter().map(String::as_str).collect();
    fails_like_the_real_run(&tb, &smaller, REGION);
    let missing = create(&["--snapshot", "snap-0123456789abcdef0"]);
    let missing: Vec<&str> = missing.iter().map(String::as_str).collect();
    fails_like_the_real_run(&tb, &missing, REGION);
}

#[test]
fn ami_create_dry_run_prints_the_ami_and_creates_nothing() {
    let tb = TestBed::start();
    let (instance, data_volume) = tb.instance("web");
    let before = inventory(&tb, REGION);

    let p = plan(
        &tb,
        &[
            "ami",
            "create",
            &instance,
            "--name",
            "web-golden",
            "--no-reboot",
            "--tag",
            "Ticket=OPS-2",
        ],
    );
    assert_eq!(p["dry_run"], true);
    assert_eq!(p["instance_id"], instance.as_str());
    assert_eq!(p["name"], "web-golden");
    assert_eq!(p["no_reboot"], true);
    assert!(p.get("image_id").is_none(), "{p}");
    let volumes = p["volumes"].as_array().expect("volumes");
    assert!(
        volumes
            .iter()
            .any(|v| v["volume_id"] == data_volume.as_str()),
        "{p}"
    );
    assert_eq!(tag(&p, "Name"), Some("web"));
    assert_eq!(tag(&p, "Ticket"), Some("OPS-2"));
    assert_eq!(tag(&p, "autosnap:source-instance"), Some(instance.as_str()));
    assert_eq!(inventory(&tb, REGION), before);

    // A name in use fails before anything is made, dry or not.
    let vol = tb.volume(1, &[]);
    let snap = tb.foreign_snapshot(&vol);
    tb.image_using(&snap);
    let taken = format!("test-image-{snap}");
    fails_like_the_real_run(&tb, &["ami", "create", &instance, "--name", &taken], REGION);
    fails_like_the_real_run(
        &tb,
        &["ami", "create", "i-0123456789abcdef0", "--name", "x"],
        REGION,
    );
}

#[test]
fn ami_from_snapshot_dry_run_prints_the_registration_and_registers_nothing() {
    let tb = TestBed::start();
    let vol = tb.volume(4, &[]);
    let snap = tb.foreign_snapshot(&vol);
    let before = inventory(&tb, REGION);

    let p = plan(
        &tb,
        &[
            "ami",
            "from-snapshot",
            &snap,
            "--name",
            "from-backup",
            "--architecture",
            "arm64",
        ],
    );
    assert_eq!(p["dry_run"], true);
    assert_eq!(p["snapshot_id"], snap.as_str());
    assert_eq!(p["name"], "from-backup");
    assert_eq!(p["volume_size_gib"], 4);
    assert_eq!(p["architecture"], "arm64");
    assert_eq!(p["boot_mode"], "uefi");
    assert_eq!(tag(&p, "autosnap:source-snapshot"), Some(snap.as_str()));
    assert_eq!(inventory(&tb, REGION), before);

    tb.image_using(&snap);
    let taken = format!("test-image-{snap}");
    fails_like_the_real_run(
        &tb,
        &["ami", "from-snapshot", &snap, "--name", &taken],
        REGION,
    );
    fails_like_the_real_run(
        &tb,
        &[
            "ami",
            "from-snapshot",
            "snap-0123456789abcdef0",
            "--name",
            "y",
        ],
        REGION,
    );
}

#[test]
fn upload_dry_run_counts_the_blocks_and_starts_no_snapshot() {
    let tb = TestBed::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("disk.img");
    // Three 512 KiB blocks: data, zeros, and a short tail with data.
    let block = 524_288;
    let mut image = vec![7u8; block];
    image.extend(vec![0u8; block]);
    image.extend(vec![9u8; 1000]);
    std::fs::write(&file, &image).expect("write image");
    let before = inventory(&tb, REGION);

    let path = file.to_str().expect("utf-8 path");
    let p = plan(&tb, &["upload", path, "--tag", "Name=img"]);
    assert_eq!(p["dry_run"], true);
    assert_eq!(p["file_bytes"], image.len());
    assert_eq!(p["blocks"], 3);
    assert_eq!(p["blocks_to_write"], 2);
    assert_eq!(p["volume_size_gib"], 1);
    assert_eq!(tag(&p, "Name"), Some("img"));
    assert!(p.get("snapshot_id").is_none(), "{p}");
    assert_eq!(inventory(&tb, REGION), before);

    let missing = dir.path().join("nope.img");
    fails_like_the_real_run(&tb, &["upload", missing.to_str().expect("utf-8")], REGION);
}

/// Mount paths: nothing is frozen and no hook runs; the plan names the hooks
/// and the freeze. Runs where `/` can be named with --volume (any Linux).
#[test]
fn snapshot_create_dry_run_of_a_mount_path_runs_no_hook_and_freezes_nothing() {
    let tb = TestBed::start();
    let (instance, data_volume) = tb.instance("db");
    let imds = FakeImds::start(&instance, REGION);
    let scratch = tempfile::tempdir().expect("temp dir");
    let marker = scratch.path().join("hook-ran");
    let hook = format!("touch {}", marker.display());
    let before = inventory(&tb, REGION);
    let mapping = format!("/={data_volume}");

    let out = tb
        .cmd()
        .env_remove("AWS_EC2_METADATA_DISABLED")
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.endpoint())
        .args([
            "-o", "json", "snapshot", "create", "/", "--volume", &mapping,
        ])
        .args(["--pre", &hook, "--post", &hook, "--dry-run"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let json: Value = serde_json::from_slice(&out.stdout).expect("JSON plan");
    let p = &json.as_array().expect("a list")[0];
    assert_eq!(p["volume_id"], data_volume.as_str());
    assert_eq!(p["pre_hooks"][0], hook.as_str());
    assert_eq!(p["post_hooks"][0], hook.as_str());
    assert_eq!(p["freeze"], serde_json::json!([]));
    assert_eq!(tag(p, "autosnap:consistency"), Some("crash"));
    assert!(!marker.exists(), "a dry run runs no hook");
    assert_eq!(inventory(&tb, REGION), before);

    // Freezing the root filesystem is refused by the real run before
    // anything happens (exit 2): the dry run refuses it the same way.
    let freeze_root = |dry: bool| {
        let mut c = tb.cmd();
        c.env_remove("AWS_EC2_METADATA_DISABLED")
            .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.endpoint())
            .args(["snapshot", "create", "/", "--freeze", "--volume", &mapping]);
        if dry {
            c.arg("--dry-run");
        }
        c.output().expect("run").status.code()
    };
    assert_eq!(freeze_root(true), Some(2));
    assert_eq!(freeze_root(false), Some(2));
    assert!(!marker.exists());
    assert_eq!(inventory(&tb, REGION), before);
}

fn objects(tb: &TestBed, bucket: &str) -> Vec<String> {
    let s3 = tb.s3();
    tb.block(async {
        s3.list_objects_v2()
            .bucket(bucket)
            .send()
            .await
            .expect("list objects")
            .contents()
            .iter()
            .filter_map(|o| o.key().map(String::from))
            .collect()
    })
}

#[test]
fn ami_store_and_restore_dry_runs_print_the_plan_and_change_nothing() {
    let tb = TestBed::start();
    tb.bucket("amis");
    let (instance, _) = tb.instance("web");
    let created = tb.json(&[
        "ami",
        "create",
        &instance,
        "--name",
        "golden",
        "--tag",
        "Team=web",
        "--wait",
        "--poll-interval",
        "100ms",
    ]);
    let ami = created["image_id"].as_str().expect("image_id").to_string();

    let p = plan(&tb, &["ami", "store", &ami, "--bucket", "amis"]);
    assert_eq!(p["dry_run"], true);
    assert_eq!(p["image_id"], ami.as_str());
    assert_eq!(p["object_key"], format!("{ami}.bin").as_str());
    assert_eq!(
        p["metadata_key"],
        format!("ami-metadata/{ami}.json").as_str()
    );
    assert!(objects(&tb, "amis").is_empty(), "nothing stored");
    fails_like_the_real_run(
        &tb,
        &["ami", "store", &ami, "--bucket", "no-such-bucket"],
        REGION,
    );

    tb.json(&[
        "ami",
        "store",
        &ami,
        "--bucket",
        "amis",
        "--poll-interval",
        "100ms",
    ]);
    let before = inventory(&tb, REGION);
    let p = plan(
        &tb,
        &[
            "ami",
            "restore",
            "--bucket",
            "amis",
            "--ami",
            &ami,
            "--name",
            "golden-copy",
        ],
    );
    assert_eq!(p["dry_run"], true);
    assert_eq!(p["source_image_id"], ami.as_str());
    assert_eq!(p["name"], "golden-copy");
    assert_eq!(p["object"], format!("s3://amis/{ami}.bin").as_str());
    assert_eq!(tag(&p, "Team"), Some("web"));
    assert_eq!(tag(&p, "autosnap:restored-from"), Some(ami.as_str()));
    assert_eq!(inventory(&tb, REGION), before);
    // The original still holds its name: asked for by name, both runs refuse.
    fails_like_the_real_run(
        &tb,
        &[
            "ami", "restore", "--bucket", "amis", "--ami", &ami, "--name", "golden",
        ],
        REGION,
    );
}
