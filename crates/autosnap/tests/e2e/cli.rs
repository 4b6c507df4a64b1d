//! End-to-end tests: the real `autosnap` binary against the local test bed.
//! Each test starts its own emulator, so they run in parallel.

use crate::support::{closed_port, TestBed, ACCOUNT, REGION};
use predicates::prelude::*;
use serde_json::Value;

fn ids(v: &Value, key: &str) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x[key].as_str().expect("string id").to_string())
        .collect()
}

// ---- help, completions, man (no AWS) --------------------------------------

#[test]
fn help_lists_commands_and_exit_codes() {
    let bed = TestBed::offline();
    bed.bare_cmd()
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("snapshot"))
        .stdout(predicate::str::contains("volume"))
        .stdout(predicate::str::contains("Exit codes"));
    for sub in [
        vec!["snapshot", "create", "--help"],
        vec!["snapshot", "delete", "--help"],
        vec!["snapshot", "copy", "--help"],
        vec!["snapshot", "list", "--help"],
        vec!["volume", "list", "--help"],
        vec!["volume", "create", "--help"],
        vec!["config", "check", "--help"],
        vec!["init", "--help"],
    ] {
        bed.bare_cmd()
            .args(&sub)
            .assert()
            .success()
            .stdout(predicate::str::contains("Usage: autosnap"));
    }
}

#[test]
fn completions_and_man_page() {
    let bed = TestBed::offline();
    bed.bare_cmd()
        .args(["completions", "bash"])
        .assert()
        .success()
        .stdout(predicate::str::contains("_autosnap"));
    bed.bare_cmd()
        .args(["man"])
        .assert()
        .success()
        .stdout(predicate::str::contains(".TH autosnap"));
    let dir = bed.home.path().join("man");
    bed.bare_cmd()
        .args(["man", "--dir"])
        .arg(&dir)
        .assert()
        .success();
    assert!(dir.join("autosnap-snapshot-create.1").exists());
}

// ---- volumes -------------------------------------------------------------

#[test]
fn volume_list_shows_tags_and_newest_snapshot() {
    let bed = TestBed::start();
    let db = bed.volume(8, &[("Name", "db"), ("Env", "prod")]);
    let web = bed.volume(4, &[("Name", "web"), ("Env", "dev")]);
    let created = bed.json(&["snapshot", "create", &db]);
    let snap = created[0]["snapshot_id"].as_str().unwrap().to_string();

    let all = bed.json(&["volume", "list"]);
    let mut vols = ids(&all, "volume_id");
    vols.sort();
    let mut want = vec![db.clone(), web.clone()];
    want.sort();
    assert_eq!(vols, want);
    let dbrow = all
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["volume_id"] == db.as_str())
        .unwrap();
    assert_eq!(dbrow["name"], "db");
    assert_eq!(dbrow["size_gib"], 8);
    assert_eq!(dbrow["tags"]["Env"], "prod");
    assert_eq!(dbrow["newest_snapshot"]["snapshot_id"], snap.as_str());

    let prod = bed.json(&["volume", "list", "--tag", "Env=prod"]);
    assert_eq!(ids(&prod, "volume_id"), vec![db.clone()]);
    let keyonly = bed.json(&["volumes", "list", "--tag", "Env"]);
    assert_eq!(keyonly.as_array().unwrap().len(), 2);

    bed.cmd()
        .args(["volume", "list"])
        .assert()
        .success()
        .stdout(predicate::str::contains("NEWEST SNAPSHOT"))
        .stdout(predicate::str::contains(snap.as_str()))
        .stdout(predicate::str::contains("none"));
}

#[test]
fn volume_list_by_instance() {
    let bed = TestBed::start();
    let (inst, vol) = bed.instance("app");
    bed.volume(2, &[]);
    let out = bed.json(&["volume", "list", "--instance", &inst]);
    let got = ids(&out, "volume_id");
    assert!(got.contains(&vol), "{got:?}");
    assert!(out
        .as_array()
        .unwrap()
        .iter()
        .all(|v| v["attachments"][0]["instance_id"] == inst.as_str()));

    // An instance that does not exist is an error naming it, not an empty table.
    let missing = "i-0fedcba9876543210";
    let out = bed
        .cmd()
        .args(["volume", "list", "--instance", missing])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("instance {missing} does not exist")),
        "{stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "no table: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn volume_create_from_snapshot_restores_with_tags() {
    let bed = TestBed::start();
    let vol = bed.volume(8, &[("Name", "db")]);
    let snap = bed.json(&["snapshot", "create", &vol])[0]["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let v = bed.json(&[
        "volume",
        "create",
        "--snapshot",
        &snap,
        "--availability-zone",
        "us-east-1b",
        "--type",
        "gp3",
        "--size",
        "10",
        "--tag",
        "Restore=yes",
        "--wait",
    ]);
    assert_eq!(v["snapshot_id"], snap.as_str());
    assert_eq!(v["availability_zone"], "us-east-1b");
    assert_eq!(v["size_gib"], 10);
    assert_eq!(v["volume_type"], "gp3");
    assert_eq!(v["state"], "available");
    assert_eq!(v["tags"]["Restore"], "yes");
    assert_eq!(v["tags"]["autosnap:source-snapshot"], snap.as_str());

    // Smaller than the snapshot: refused before any AWS change.
    bed.cmd()
        .args([
            "volume",
            "create",
            "--snapshot",
            &snap,
            "--az",
            "us-east-1a",
            "--size",
            "4",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("smaller than snapshot"));
    // Unknown snapshot: named, with region and account.
    bed.cmd()
        .args([
            "volume",
            "create",
            "--snapshot",
            "snap-0123456789abcdef0",
            "--az",
            "us-east-1a",
        ])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!(
            "snapshot snap-0123456789abcdef0 does not exist in {REGION} for account {ACCOUNT}"
        )));
}

// ---- snapshot create -------------------------------------------------------

#[test]
fn snapshot_create_tags_on_create() {
    let bed = TestBed::start();
    let vol = bed.volume(8, &[("Name", "db"), ("Team", "data")]);
    let cfg = bed.write_config(
        "autosnap.toml",
        "[defaults]\ntags = { CostCenter = \"ops\" }\n",
        0o644,
    );
    let out = bed.json(&[
        "-c",
        cfg.to_str().unwrap(),
        "snapshot",
        "create",
        &vol,
        "--tag",
        "Purpose=test",
        "--description",
        "before upgrade",
    ]);
    let s = &out[0];
    assert_eq!(s["volume_id"], vol.as_str());
    assert_eq!(s["description"], "before upgrade");
    let tags = &s["tags"];
    assert_eq!(tags["Name"], "db", "volume tags are copied");
    assert_eq!(tags["Team"], "data");
    assert_eq!(tags["Purpose"], "test");
    assert_eq!(tags["CostCenter"], "ops", "defaults.tags apply");
    assert_eq!(tags["autosnap:managed"], "true");
    assert_eq!(tags["autosnap:source-volume"], vol.as_str());
    assert_eq!(s["managed"], true);
    for key in [
        "snapshot_id",
        "state",
        "start_time",
        "size_gib",
        "encrypted",
    ] {
        assert!(s.get(key).is_some(), "missing {key}");
    }

    let out = bed.json(&["snapshot", "create", &vol, "--no-copy-tags"]);
    assert!(out[0]["tags"].get("Name").is_none());
    assert_eq!(out[0]["tags"]["autosnap:managed"], "true");
}

#[test]
fn snapshot_create_instance_is_one_set() {
    let bed = TestBed::start();
    let (inst, vol) = bed.instance("app");
    let out = bed.json(&["snapshot", "create", &inst, "--wait"]);
    let snaps = out.as_array().unwrap();
    assert!(!snaps.is_empty());
    let set = snaps[0]["tags"]["autosnap:set-id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(set.starts_with(&inst), "{set}");
    for s in snaps {
        assert_eq!(s["tags"]["autosnap:set-id"], set.as_str());
        assert_eq!(s["tags"]["autosnap:source-instance"], inst.as_str());
        assert_eq!(s["state"], "completed");
    }
    assert!(snaps.iter().any(|s| s["volume_id"] == vol.as_str()));
}

#[test]
fn snapshot_create_reports_partial_failure() {
    let bed = TestBed::start();
    let vol = bed.volume(1, &[]);
    let out = bed
        .cmd()
        .args([
            "snapshot",
            "create",
            &vol,
            "vol-0123456789abcdef0",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "partial failure exit code");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "volume vol-0123456789abcdef0 does not exist in us-east-1 for account 123456789012"
        ),
        "{stderr}"
    );
    let made: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(made.as_array().unwrap().len(), 1);

    // All targets failing is a plain failure, and the error is all it prints: no empty table.
    let out = bed
        .cmd()
        .args(["snapshot", "create", "vol-0123456789abcdef0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stdout.is_empty(),
        "no table: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}

#[test]
fn malformed_ids_are_usage_errors() {
    let bed = TestBed::start();
    for args in [
        vec!["snapshot", "create", "vol-xyz"],
        vec!["snapshot", "create", "ami-0123abcd"],
        vec!["snapshot", "delete", "snap-123"],
        vec!["snapshot", "copy", "snap-0123abcd"],
        vec![
            "volume",
            "create",
            "--snapshot",
            "vol-0123abcd",
            "--az",
            "us-east-1a",
        ],
        vec!["volume", "list", "--tag", "=x"],
    ] {
        bed.cmd().args(&args).assert().code(2);
    }
    bed.cmd()
        .args(["snapshot", "delete", "snap-123"])
        .assert()
        .stderr(predicate::str::contains(
            "'snap-123' is not a valid snapshot id",
        ));
}

// ---- snapshot list ---------------------------------------------------------

#[test]
fn snapshot_list_filters_and_orders_newest_first() {
    let bed = TestBed::start();
    let a = bed.volume(1, &[("Name", "a")]);
    let b = bed.volume(1, &[("Name", "b")]);
    let foreign = bed.foreign_snapshot(&a);
    let first = bed.json(&["snapshot", "create", &a, "--tag", "Kind=x"])[0]["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let second = bed.json(&["snapshot", "create", &b])[0]["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();

    let all = bed.json(&["snapshot", "list"]);
    let listed = ids(&all, "snapshot_id");
    assert_eq!(listed.len(), 3, "{listed:?}");
    let times: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["start_time"].as_str().unwrap())
        .collect();
    let mut sorted = times.clone();
    sorted.sort_by(|x, y| y.cmp(x));
    assert_eq!(times, sorted, "newest first");

    assert_eq!(
        ids(
            &bed.json(&["snapshot", "list", "--volume", &b]),
            "snapshot_id"
        ),
        vec![second.clone()]
    );
    assert_eq!(
        ids(
            &bed.json(&["snapshot", "list", "--tag", "Kind=x"]),
            "snapshot_id"
        ),
        vec![first.clone()]
    );
    let managed = ids(
        &bed.json(&["snapshots", "list", "--managed"]),
        "snapshot_id",
    );
    assert!(!managed.contains(&foreign));
    assert_eq!(managed.len(), 2);
    assert!(bed
        .json(&["snapshot", "list", "--older-than", "1d"])
        .as_array()
        .unwrap()
        .is_empty());
    bed.cmd()
        .args(["snapshot", "list", "--older-than", "soon"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--older-than"));
}

// ---- snapshot delete ---------------------------------------------------------

#[test]
fn snapshot_delete_only_what_autosnap_owns() {
    let bed = TestBed::start();
    let vol = bed.volume(1, &[]);
    let mine = bed.json(&["snapshot", "create", &vol])[0]["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let foreign = bed.foreign_snapshot(&vol);

    // Dry run: the plan, and nothing deleted.
    let plan = bed
        .cmd()
        .args([
            "snapshot",
            "delete",
            &mine,
            &foreign,
            "--dry-run",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert_eq!(plan.status.code(), Some(3));
    let plan: Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert_eq!(plan[0]["result"], "would_delete");
    assert_eq!(plan[1]["result"], "refused");
    assert!(plan[1]["reason"].as_str().unwrap().contains("--force"));
    assert!(bed.snapshot_exists(REGION, &mine));

    // For real: ours goes, the foreign one stays.
    bed.cmd()
        .args(["snapshot", "delete", &mine, &foreign])
        .assert()
        .code(3)
        .stdout(predicate::str::contains("deleted"))
        .stdout(predicate::str::contains("refused"));
    assert!(!bed.snapshot_exists(REGION, &mine));
    assert!(bed.snapshot_exists(REGION, &foreign));

    // --force deletes the foreign one.
    bed.cmd()
        .args(["snapshot", "delete", &foreign, "--force"])
        .assert()
        .success();
    assert!(!bed.snapshot_exists(REGION, &foreign));

    // Unknown ids are reported by name; nothing succeeded: exit 1.
    bed.cmd()
        .args(["snapshot", "delete", "snap-0123456789abcdef0"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains("does not exist in us-east-1"));
}

#[test]
fn snapshot_delete_refuses_ami_backed_even_with_force() {
    let bed = TestBed::start();
    let vol = bed.volume(1, &[]);
    let snap = bed.json(&["snapshot", "create", &vol])[0]["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let ami = bed.image_using(&snap);
    bed.cmd()
        .args(["snapshot", "delete", &snap, "--force"])
        .assert()
        .code(1)
        .stdout(predicate::str::contains(format!("used by AMI {ami}")));
    assert!(bed.snapshot_exists(REGION, &snap));
}

// ---- snapshot copy -----------------------------------------------------------

#[test]
fn snapshot_copy_is_encrypted_tagged_and_idempotent() {
    let bed = TestBed::start();
    let vol = bed.volume(2, &[("Name", "db")]);
    let snap = bed.json(&["snapshot", "create", &vol])[0]["snapshot_id"]
        .as_str()
        .unwrap()
        .to_string();
    let first = bed.json(&[
        "snapshot",
        "copy",
        &snap,
        "--to-region",
        "eu-west-1",
        "--kms-key",
        "alias/backup",
        "--wait",
    ]);
    assert_eq!(first[0]["result"], "created");
    assert_eq!(first[0]["state"], "completed");
    let copy = first[0]["snapshot_id"].as_str().unwrap().to_string();

    let listed = bed.json(&["snapshot", "list", "--region", "eu-west-1"]);
    let c = &listed[0];
    assert_eq!(c["snapshot_id"], copy.as_str());
    assert_eq!(c["encrypted"], true);
    assert_eq!(c["tags"]["Name"], "db", "source tags are carried over");
    assert_eq!(c["tags"]["autosnap:source-snapshot"], snap.as_str());
    assert_eq!(c["tags"]["autosnap:source-region"], REGION);

    let again = bed.json(&["snapshot", "copy", &snap, "--to-region", "eu-west-1"]);
    assert_eq!(again[0]["result"], "exists");
    assert_eq!(again[0]["snapshot_id"], copy.as_str());
    assert_eq!(
        bed.json(&["snapshot", "list", "--region", "eu-west-1"])
            .as_array()
            .unwrap()
            .len(),
        1,
        "no second copy"
    );

    bed.cmd()
        .args(["snapshot", "copy", &snap, "--to-region", "Mars"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--to-region"));

    // Every copy failing: the errors are all it prints, no table of failures.
    let missing = "snap-0123456789abcdef0";
    let out = bed
        .cmd()
        .args(["snapshot", "copy", missing, "--to-region", "eu-west-1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stdout.is_empty(),
        "no table: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(missing),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---- init and config ---------------------------------------------------------

#[test]
fn init_discovers_account_and_never_overwrites() {
    let bed = TestBed::start();
    // -c names the file to write, in a directory that does not exist yet.
    let path = bed.home.path().join("cfg/autosnap.toml");
    bed.cmd()
        .args(["-c", path.to_str().unwrap(), "init"])
        .assert()
        .success();
    assert!(path.exists());
    // Without -c or $AUTOSNAP_CONFIG: the user config directory.
    let out = bed
        .cmd()
        .args(["--endpoint-url", &bed.endpoint(), "init"])
        .assert()
        .success()
        .get_output()
        .clone();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(ACCOUNT), "{stderr}");
    let written = bed.home.path().join(".config/autosnap/config.toml");
    let text = std::fs::read_to_string(&written).unwrap();
    assert!(text.contains(&format!("account_id = \"{ACCOUNT}\"")));
    assert!(text.contains(&format!("region = \"{REGION}\"")));
    assert!(!text.contains("testing"), "no secrets are written");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&written).unwrap().permissions().mode() & 0o777,
        0o600
    );

    bed.cmd()
        .arg("init")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--force"));
    bed.cmd().args(["init", "--force"]).assert().success();
    assert!(bed
        .home
        .path()
        .join(".config/autosnap/config.toml.bak")
        .exists());
    // The written file is picked up and valid.
    bed.cmd().args(["config", "check"]).assert().success();
}

#[test]
fn config_show_names_sources_and_redacts_secrets() {
    let bed = TestBed::start();
    let cfg = bed.write_config(
        "autosnap.toml",
        "[aws]\nregion = \"eu-west-1\"\naccess_key_id = \"AKIDEXAMPLE\"\nsecret_access_key = \"s3cr3t-value-xyz\"\n",
        0o600,
    );
    let shown = bed.json(&["-c", cfg.to_str().unwrap(), "config", "show"]);
    assert_eq!(
        shown["settings"]["region"]["value"], "us-east-1",
        "environment beats file"
    );
    assert!(shown["settings"]["region"]["source"]
        .as_str()
        .unwrap()
        .contains("AWS_REGION"));
    let shown = bed.json(&[
        "-c",
        cfg.to_str().unwrap(),
        "--region",
        "ap-south-1",
        "config",
        "show",
    ]);
    assert_eq!(
        shown["settings"]["region"]["value"], "ap-south-1",
        "flag beats environment"
    );

    let out = bed
        .bare_cmd()
        .args(["-c", cfg.to_str().unwrap(), "-vvv", "config", "show"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        all.contains("eu-west-1"),
        "file value shown when nothing overrides it: {all}"
    );
    assert!(!all.contains("s3cr3t-value-xyz"), "secret leaked: {all}");

    // The same file's keys work for real calls, and never show up in logs.
    let out = bed
        .bare_cmd()
        .args([
            "-c",
            cfg.to_str().unwrap(),
            "--endpoint-url",
            &bed.endpoint(),
            "-vvv",
            "snapshot",
            "list",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("s3cr3t-value-xyz"), "secret leaked in logs");
}

#[test]
fn config_check_validates_account_pin() {
    let bed = TestBed::start();
    let good = bed.write_config(
        "good.toml",
        &format!("[aws]\naccount_id = \"{ACCOUNT}\"\n"),
        0o644,
    );
    bed.cmd()
        .args(["-c", good.to_str().unwrap(), "config", "check"])
        .assert()
        .success()
        .stdout(predicate::str::contains("ok"));
    let bad = bed.write_config("bad.toml", "[aws]\naccount_id = \"999999999999\"\n", 0o644);
    bed.cmd()
        .args(["-c", bad.to_str().unwrap(), "config", "check"])
        .assert()
        .code(2)
        .stdout(predicate::str::contains("999999999999"));
}

#[test]
fn config_errors_are_clear_usage_errors() {
    let bed = TestBed::start();
    bed.cmd()
        .args(["-c", "/nonexistent/autosnap.toml", "snapshot", "list"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("/nonexistent/autosnap.toml"))
        .stderr(predicate::str::contains("does not exist"));

    let unknown = bed.write_config(
        "unknown.toml",
        "[aws]\nregion = \"us-east-1\"\nregoin = \"x\"\n",
        0o644,
    );
    bed.cmd()
        .args(["-c", unknown.to_str().unwrap(), "snapshot", "list"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("regoin"))
        .stderr(predicate::str::contains("line 3, column 1"));

    let wrong = bed.write_config("wrong.toml", "[aws]\nmax_attempts = \"many\"\n", 0o644);
    bed.cmd()
        .args(["-c", wrong.to_str().unwrap(), "snapshot", "list"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("line 2"));

    let open = bed.write_config(
        "open.toml",
        "[aws]\naccess_key_id = \"AKIDEXAMPLE\"\nsecret_access_key = \"s3cr3t-value-xyz\"\n",
        0o644,
    );
    bed.cmd()
        .args(["-c", open.to_str().unwrap(), "snapshot", "list"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("chmod 600"))
        .stderr(predicate::str::contains("s3cr3t").not());

    // ./autosnap.toml is found without -c.
    bed.write_config("autosnap.toml", "[aws]\nbogus = 1\n", 0o644);
    bed.cmd()
        .args(["snapshot", "list"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("bogus"));
}

// ---- AWS access problems -------------------------------------------------------

#[test]
fn missing_credentials_and_region_are_explained() {
    let bed = TestBed::start();
    bed.bare_cmd()
        .env("AWS_REGION", REGION)
        .env("AWS_ENDPOINT_URL", bed.endpoint())
        .args(["snapshot", "list"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no AWS credentials found"));
    bed.bare_cmd()
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_ENDPOINT_URL", bed.endpoint())
        .args(["snapshot", "list"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("no AWS region configured"));
}

#[test]
fn unreachable_endpoint_fails_with_a_clear_error() {
    let bed = TestBed::start();
    let url = format!("http://127.0.0.1:{}", closed_port());
    bed.cmd()
        .env("AWS_MAX_ATTEMPTS", "1")
        .args(["--endpoint-url", &url, "snapshot", "list"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!("cannot reach {url}")));
    bed.cmd()
        .args(["--endpoint-url", "localhost:5000", "snapshot", "list"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--endpoint-url"));
}

#[test]
fn json_logs_for_machines() {
    let bed = TestBed::start();
    let vol = bed.volume(1, &[]);
    let out = bed
        .cmd()
        .args(["--log-format", "json", "snapshot", "create", &vol])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains("created snapshot"))
        .expect("a log line");
    let v: Value = serde_json::from_str(line).expect("JSON log line");
    assert_eq!(v["level"], "INFO");
}

/// One spelling per idea (README, "Flag spellings"): `--encrypt` and `--kms-key` everywhere;
/// the old `--encrypted` and `--kms-key-arn` still parse, hidden from help, for a release.
#[test]
fn one_spelling_per_idea_with_the_old_spellings_hidden() {
    let bed = TestBed::offline();
    let help = bed
        .bare_cmd()
        .args(["volume", "create", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.lines()
            .any(|l| l.trim() == "--encrypt" || l.trim().starts_with("--encrypt ")),
        "{help}"
    );
    assert!(!help.contains("--encrypted"), "{help}");
    let help = bed
        .bare_cmd()
        .args(["iam-policy", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--kms-key <ARN>"), "{help}");
    assert!(!help.contains("--kms-key-arn"), "{help}");

    let arn = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    let policy = |flag: &str| {
        let out = bed
            .cmd()
            .args(["iam-policy", "--for", "all", flag, arn])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let new = policy("--kms-key");
    assert!(new.contains(arn), "{new}");
    assert_eq!(policy("--kms-key-arn"), new);
    // The old volume flag still parses (the command then fails for want of the test bed).
    let out = bed
        .cmd()
        .args([
            "volume",
            "create",
            "--snapshot",
            "snap-0123456789abcdef0",
            "--availability-zone",
            "us-east-1a",
            "--encrypted",
        ])
        .output()
        .unwrap();
    assert_ne!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
