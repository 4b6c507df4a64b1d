//! `-o json` through the real binary: every command prints one JSON document
//! on standard output, and an error is one JSON object on standard error
//! (`{"error": {"kind", "message", "resource"}}`, its last line) with the
//! same exit code as in table mode.

use crate::support::{TestBed, ACCOUNT, REGION};
use serde_json::Value;

/// A finished run: exit code, stdout, stderr.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn of(cmd: &mut assert_cmd::Command) -> Run {
        let out = cmd.output().expect("run autosnap");
        Run {
            code: out.status.code().expect("an exit code, not a signal"),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Standard output as one JSON document.
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// The error object: the last line of standard error, parsed, with its
    /// three fields checked for shape.
    fn error(&self) -> Value {
        let last =
            self.stderr.lines().last().unwrap_or_else(|| {
                panic!("nothing on stderr (exit {}): {}", self.code, self.stdout)
            });
        let v: Value = serde_json::from_str(last).unwrap_or_else(|e| {
            panic!("the last line of stderr is not JSON ({e}): {}", self.stderr)
        });
        let e = &v["error"];
        assert!(e["kind"].is_string(), "{v}");
        assert!(e["message"].is_string(), "{v}");
        assert!(e["resource"].is_string() || e["resource"].is_null(), "{v}");
        assert_eq!(e.as_object().unwrap().len(), 3, "{v}");
        v["error"].clone()
    }
}

#[test]
fn init_prints_what_it_wrote_and_refuses_to_overwrite_as_json() {
    let bed = TestBed::start();
    let path = bed.home.path().join("cfg/autosnap.toml");
    let p = path.to_str().unwrap();
    let run = Run::of(bed.cmd().args(["-o", "json", "-c", p, "init"]));
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v = run.json();
    assert_eq!(v["path"], p);
    assert_eq!(v["account_id"], ACCOUNT);
    assert_eq!(v["region"], REGION);
    assert!(v["arn"].as_str().unwrap().contains(ACCOUNT), "{v}");
    assert_eq!(v["backup"], Value::Null);
    let next = v["next"].as_array().unwrap();
    assert!(next.iter().any(|c| c == "autosnap config check"), "{v}");
    assert!(path.exists());

    // The same refusal as in table mode (exit 2), as an error object.
    let run = Run::of(bed.cmd().args(["-o", "json", "-c", p, "init"]));
    assert_eq!(run.code, 2);
    assert_eq!(run.stdout, "");
    let e = run.error();
    assert_eq!(e["kind"], "usage");
    assert!(e["message"].as_str().unwrap().contains("--force"), "{e}");

    let run = Run::of(
        bed.cmd()
            .args(["--output=json", "-c", p, "init", "--force"]),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.json()["backup"], format!("{p}.bak"));
}

#[test]
fn config_check_reports_an_unparsable_file_as_json() {
    let bed = TestBed::start();
    let bad = bed.write_config(
        "bad.toml",
        "[aws]\nregion = \"us-east-1\"\nregoin = \"x\"\n",
        0o600,
    );
    let b = bad.to_str().unwrap();

    // config check: the report is the result, on stdout, exit 2.
    let run = Run::of(bed.cmd().args(["-o", "json", "-c", b, "config", "check"]));
    assert_eq!(run.code, 2, "{}", run.stderr);
    let checks = run.json();
    let checks = checks.as_array().unwrap();
    assert_eq!(checks.len(), 1, "{checks:?}");
    assert_eq!(checks[0]["check"], "config file");
    assert_eq!(checks[0]["ok"], false);
    let detail = checks[0]["detail"].as_str().unwrap();
    assert!(detail.contains("regoin") && detail.contains(b), "{detail}");
    // A file that does not exist is reported the same way.
    let missing = bed.home.path().join("missing.toml");
    let run = Run::of(bed.cmd().args([
        "-o",
        "json",
        "-c",
        missing.to_str().unwrap(),
        "config",
        "check",
    ]));
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert_eq!(run.json()[0]["ok"], false);

    // Any other command: the error object names the file, kind config.
    for args in [&["config", "show"][..], &["snapshot", "list"]] {
        let run = Run::of(bed.cmd().args(["-o", "json", "-c", b]).args(args));
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert_eq!(run.stdout, "", "{args:?}");
        let e = run.error();
        assert_eq!(e["kind"], "config", "{args:?}: {e}");
        assert_eq!(e["resource"], b, "{args:?}: {e}");
        assert!(e["message"].as_str().unwrap().contains("regoin"), "{e}");
    }

    // Table mode shows the same report as a table, with the same exit code.
    let run = Run::of(bed.cmd().args(["-c", b, "config", "check"]));
    assert_eq!(run.code, 2);
    assert!(
        run.stdout.contains("FAILED") && run.stdout.contains("regoin"),
        "{}",
        run.stdout
    );
}

#[test]
fn config_show_and_snapshot_list_print_json() {
    let bed = TestBed::start();
    let vol = bed.volume(1, &[("Name", "data")]);
    let ec2 = bed.ec2(REGION);
    let snap = bed.block(async {
        ec2.create_snapshot()
            .volume_id(&vol)
            .send()
            .await
            .expect("snapshot")
            .snapshot_id
            .unwrap()
    });

    let run = Run::of(bed.cmd().args(["-o", "json", "config", "show"]));
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v = run.json();
    assert_eq!(v["settings"]["region"]["value"], REGION);

    let run = Run::of(bed.cmd().args(["snapshot", "list", "-o", "json"]));
    assert_eq!(run.code, 0, "{}", run.stderr);
    let v = run.json();
    let ids: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["snapshot_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [snap.as_str()]);
}

#[test]
fn aws_errors_are_error_objects_with_kind_and_resource() {
    let bed = TestBed::start();
    let missing = "snap-0123456789abcdef0";
    let args = [
        "volume",
        "create",
        "--snapshot",
        missing,
        "--availability-zone",
        "us-east-1a",
    ];
    let table = Run::of(bed.cmd().args(args));
    let run = Run::of(bed.cmd().args(["-o", "json"]).args(args));
    assert_eq!(run.code, table.code, "same exit code as in table mode");
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.stdout, "");
    let e = run.error();
    assert_eq!(e["kind"], "not_found", "{e}");
    assert_eq!(e["resource"], missing, "{e}");
    assert!(e["message"].as_str().unwrap().contains(missing), "{e}");
    // Table mode says the same thing as text.
    assert!(
        table.stderr.contains("error: ") && table.stderr.contains(missing),
        "{}",
        table.stderr
    );
}

#[test]
fn each_failed_item_is_an_error_object_beside_the_document() {
    let bed = TestBed::start();
    let vol = bed.volume(1, &[]);
    let missing = "vol-0123456789abcdef0";
    let run = Run::of(
        bed.cmd()
            .args(["-o", "json", "snapshot", "create", &vol, missing]),
    );
    assert_eq!(run.code, 3, "partial: {}", run.stderr);
    assert_eq!(run.json().as_array().unwrap().len(), 1);
    let e = run.error();
    assert_eq!(e["kind"], "not_found", "{e}");
    assert_eq!(e["resource"], missing, "{e}");
}

#[test]
fn usage_errors_from_the_command_line_are_error_objects() {
    let bed = TestBed::offline();
    // Each spelling of -o json, and errors clap finds before autosnap runs:
    // (with JSON, the same in table mode, what the error should name).
    type Case<'a> = (&'a [&'a str], &'a [&'a str], &'a str);
    let cases: &[Case] = &[
        (
            &["-o", "json", "snapshot", "delete", "snap-zz"],
            &["snapshot", "delete", "snap-zz"],
            "snap-zz",
        ),
        (
            &["--output", "json", "snapshot", "list", "--older-than", "5m"],
            &["snapshot", "list", "--older-than", "5m"],
            "--older-than",
        ),
        (
            &["snapshot", "list", "--output=json", "--frobnicate"],
            &["snapshot", "list", "--frobnicate"],
            "--frobnicate",
        ),
        (&["-qojson", "snapshot"], &["-q", "snapshot"], "snapshot"),
        (
            &["-o=json", "no-such-command"],
            &["no-such-command"],
            "no-such-command",
        ),
    ];
    for (args, table_args, named) in cases {
        let table = Run::of(bed.cmd().args(*table_args));
        let run = Run::of(bed.cmd().args(*args));
        assert_eq!(table.code, 2, "{table_args:?}: {}", table.stderr);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert_eq!(run.stdout, "", "{args:?}");
        assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
        let e = run.error();
        assert_eq!(e["kind"], "usage", "{args:?}: {e}");
        let message = e["message"].as_str().unwrap();
        assert!(!message.starts_with("error:"), "{message}");
        assert!(!message.contains("For more information"), "{message}");
        assert!(!message.contains('\n'), "one line: {message}");
        let resource = e["resource"].as_str().unwrap_or("");
        assert!(
            resource.contains(named) || message.contains(named),
            "{args:?}: {e}"
        );
    }
    // -o prometheus outside `status`, and a bad -o, in JSON when json was asked last.
    let run = Run::of(
        bed.cmd()
            .args(["-o", "prometheus", "-o", "json", "completions", "bash"]),
    );
    assert_eq!(run.code, 2);
    assert_eq!(run.error()["kind"], "usage");
    // Help and --version are not errors: they print as usual, exit 0.
    let run = Run::of(bed.cmd().args(["-o", "json", "snapshot", "list", "--help"]));
    assert_eq!(run.code, 0);
    assert!(
        run.stdout.contains("Usage: autosnap snapshot list"),
        "{}",
        run.stdout
    );
}

#[test]
fn missing_credentials_keep_their_exit_code_in_json() {
    let bed = TestBed::offline();
    let args = ["--region", REGION, "snapshot", "list"];
    let table = Run::of(bed.bare_cmd().args(args));
    let run = Run::of(bed.bare_cmd().args(["-o", "json"]).args(args));
    assert_eq!(table.code, 2, "{}", table.stderr);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let e = run.error();
    assert_eq!(e["kind"], "credentials", "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("AWS_PROFILE"),
        "{e}"
    );
}

#[test]
fn hints_name_json_fields_not_table_columns() {
    let bed = TestBed::start();
    // A snapshot autosnap did not create is refused: the summary points at
    // where the reason is.
    let vol = bed.volume(1, &[]);
    let foreign = bed.foreign_snapshot(&vol);
    let run = Run::of(
        bed.cmd()
            .args(["-o", "json", "snapshot", "delete", &foreign]),
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(run.json()[0]["result"], "refused");
    let e = run.error();
    assert_eq!(e["kind"], "failed", "{e}");
    let message = e["message"].as_str().unwrap();
    assert!(message.contains("see `reason` in the output"), "{e}");
    assert!(!run.stderr.contains("REASON"), "{}", run.stderr);
    let run = Run::of(bed.cmd().args(["snapshot", "delete", &foreign]));
    assert!(run.stderr.contains("see REASON"), "{}", run.stderr);
}

/// The audit of every command group, as one run through the test bed: with
/// `-o json`, whatever succeeds prints exactly one JSON document on stdout.
#[test]
fn every_command_prints_one_json_document() {
    let bed = TestBed::start();
    let vol = bed.volume(1, &[("Backup", "daily")]);
    let (instance, _) = bed.instance("app");
    let home = bed.home.path();
    let cfg = bed.write_config(
        "policies.toml",
        r#"
[[policy]]
name = "daily"
resource = "volume"
select = [{ tags = { Backup = "daily" } }]
schedule = "0 3 * * *"
retain = { last = 3 }
"#,
        0o600,
    );
    let cfg = cfg.to_str().unwrap();
    let repo = home.join("repo");
    let repo = repo.to_str().unwrap();
    let image = home.join("disk.img");
    std::fs::write(&image, vec![7u8; 1 << 20]).unwrap();
    let input = home.join("backups.json");
    std::fs::write(
        &input,
        r#"[{"id": "a", "time": "2026-01-01T00:00:00Z", "tags": []}]"#,
    )
    .unwrap();

    let json = |args: &[&str]| -> Value {
        let run = Run::of(bed.cmd().args(["-o", "json"]).args(args));
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        run.json()
    };
    json(&["volume", "list"]);
    json(&["volume", "list", "--instance", &instance]);
    let snap = json(&["snapshot", "create", &vol]);
    let snap = snap[0]["snapshot_id"].as_str().unwrap().to_string();
    json(&["snapshot", "create", &instance]);
    json(&["snapshot", "list"]);
    json(&["snapshot", "copy", &snap, "--to-region", "us-west-2"]);
    json(&[
        "volume",
        "create",
        "--snapshot",
        &snap,
        "--availability-zone",
        "us-east-1a",
    ]);
    let ami = json(&["ami", "create", &instance, "--no-reboot"]);
    let ami = ami["image_id"].as_str().unwrap().to_string();
    json(&["ami", "list"]);
    json(&["ami", "metadata", &ami]);
    json(&["ami", "delete", &ami, "--dry-run"]);
    json(&["-c", cfg, "plan"]);
    json(&["-c", cfg, "run", "--dry-run"]);
    json(&["-c", cfg, "prune", "--dry-run"]);
    json(&["-c", cfg, "status"]);
    json(&["iam-policy"]);
    json(&[
        "retention",
        "simulate",
        "--input",
        input.to_str().unwrap(),
        "--keep-last",
        "1",
    ]);
    json(&["repo", "init", repo]);
    let uploaded = json(&["upload", image.to_str().unwrap()]);
    let uploaded = uploaded["snapshot_id"].as_str().unwrap().to_string();
    json(&["archive", &uploaded, "--repo", repo]);
    json(&["repo", "list", repo]);
    json(&["repo", "verify", repo]);
    json(&["repo", "forget", repo, "--keep-last", "1"]);
    json(&["repo", "gc", repo]);
    json(&["repo", "unlock", repo]);
    let restored = home.join("restored.img");
    json(&[
        "restore",
        &uploaded,
        "--repo",
        repo,
        "--to-file",
        restored.to_str().unwrap(),
    ]);
    let downloaded = home.join("downloaded.img");
    json(&["download", &uploaded, downloaded.to_str().unwrap()]);
    json(&["init", "-c", home.join("new.toml").to_str().unwrap()]);
    json(&["config", "show"]);
    json(&["config", "check"]);
}
