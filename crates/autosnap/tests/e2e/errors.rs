//! Errors that say what and where, through the real binary: a region that cannot exist is
//! refused before any call, naming where it came from; an error response without an AWS
//! error code names the service, operation and HTTP status; I/O errors name the path the user
//! gave; config errors put the reason first, in the user's words.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;

use crate::support::TestBed;
use autosnap_repo::{
    ArchiveSource, Credentials, ImportOptions, LocalBackend, Repository, SourceKind,
};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What a command printed, stdout then stderr (`config check` reports in its table).
fn printed(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_usage_error(out: &Output) -> String {
    let err = printed(out);
    assert_eq!(out.status.code(), Some(2), "exit 2 expected: {err}");
    err
}

// ---- regions ---------------------------------------------------------------

#[test]
fn a_region_that_cannot_exist_is_refused_before_any_call_naming_its_source() {
    // The test bed accepts any region, so only a check made before calling can refuse it.
    let bed = TestBed::start();
    let out = bed
        .cmd()
        .args(["--region", "us-east-1x", "snapshot", "list"])
        .output()
        .unwrap();
    let err = assert_usage_error(&out);
    assert!(
        err.contains("--region: 'us-east-1x' is not an AWS region name; did you mean us-east-1?"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "nothing printed on stdout: {err}");

    let out = bed
        .cmd()
        .env("AWS_REGION", "useast1")
        .args(["volume", "list"])
        .output()
        .unwrap();
    let err = assert_usage_error(&out);
    assert!(err.contains("environment AWS_REGION"), "{err}");
    assert!(err.contains("'useast1'"), "{err}");
    assert!(err.contains("did you mean us-east-1?"), "{err}");

    // Far from any region: no guess, an example instead.
    let out = bed
        .cmd()
        .args(["--region", "local", "snapshot", "list"])
        .output()
        .unwrap();
    let err = assert_usage_error(&out);
    assert!(err.contains("'local' is not an AWS region name"), "{err}");
    assert!(!err.contains("did you mean"), "{err}");
}

#[test]
fn a_region_typo_in_the_config_file_is_a_config_error() {
    let bed = TestBed::offline();
    bed.write_config("autosnap.toml", "[aws]\nregion = \"eu-west-1x\"\n", 0o644);
    let out = bed.bare_cmd().args(["config", "check"]).output().unwrap();
    let err = assert_usage_error(&out);
    // Found in the working directory, so named as found.
    assert!(err.contains("config file autosnap.toml"), "{err}");
    assert!(err.contains("aws.region 'eu-west-1x'"), "{err}");
    assert!(err.contains("did you mean eu-west-1?"), "{err}");
}

#[test]
fn a_region_typo_in_the_aws_profile_is_refused_naming_the_profile() {
    let bed = TestBed::start();
    std::fs::write(
        bed.home.path().join("aws-config"),
        "[default]\nregion = ap-southeast-2.\n",
    )
    .unwrap();
    let out = bed
        .bare_cmd()
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_ENDPOINT_URL", bed.endpoint())
        .args(["snapshot", "list"])
        .output()
        .unwrap();
    let err = assert_usage_error(&out);
    assert!(err.contains("AWS profile 'default'"), "{err}");
    assert!(err.contains("did you mean ap-southeast-2?"), "{err}");
}

#[test]
fn a_well_formed_region_this_release_does_not_know_is_used_with_a_note() {
    // Regions open every year: a new one is accepted, with a note (the emulator serves only
    // the regions it knows, so `config show`, which makes no call, shows it is taken).
    let bed = TestBed::offline();
    let out = bed
        .cmd()
        .args(["--region", "ap-southeast-9", "config", "show"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", printed(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ap-southeast-9"),
        "{}",
        printed(&out)
    );
    assert!(
        stderr(&out).contains(
            "region ap-southeast-9 is not one this version of autosnap knows (did you mean \
             ap-southeast-1?); using it as given (from --region)"
        ),
        "{}",
        stderr(&out)
    );
}

// ---- error responses without an error code ----------------------------------

/// A loopback server that answers STS GetCallerIdentity properly and every other request
/// with an empty HTTP 500, like a broken proxy in front of EC2.
fn empty_500_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut reader = BufReader::new(stream);
            let mut content_length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    content_length = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0u8; content_length];
            let _ = reader.read_exact(&mut body);
            let body = String::from_utf8_lossy(&body);
            let response = if body.contains("Action=GetCallerIdentity") {
                let xml = "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
                           <GetCallerIdentityResult><Arn>arn:aws:iam::123456789012:user/t</Arn>\
                           <UserId>AIDA</UserId><Account>123456789012</Account></GetCallerIdentityResult>\
                           <ResponseMetadata><RequestId>r</RequestId></ResponseMetadata>\
                           </GetCallerIdentityResponse>";
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/xml\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{xml}",
                    xml.len()
                )
            } else {
                "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    .to_string()
            };
            let mut stream = reader.into_inner();
            let _ = stream.write_all(response.as_bytes());
        }
    });
    format!("http://{addr}")
}

#[test]
fn an_empty_error_response_names_service_operation_and_status() {
    let bed = TestBed::offline();
    let endpoint = empty_500_server();
    let out = bed
        .cmd()
        .env("AWS_ENDPOINT_URL", &endpoint)
        .env("AWS_MAX_ATTEMPTS", "1")
        .args(["volume", "list"])
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("EC2 DescribeVolumes failed: HTTP 500 with no error message"),
        "{err}"
    );
    assert!(err.contains(&endpoint), "names the endpoint: {err}");
    assert!(!err.contains("Unknown"), "{err}");
}

// ---- I/O errors name the user's path -----------------------------------------

/// A directory nobody can create files in: read-only by mode and, when the tests run as root
/// (who ignores modes), immutable too. Made writable again when dropped. `None` (the test
/// skips, saying why) when root cannot make it immutable (no CAP_LINUX_IMMUTABLE, or a
/// filesystem without the flag), unless AUTOSNAP_REQUIRE_LOOP_TESTS=1 (CI), where that fails.
struct ReadOnlyDir {
    path: PathBuf,
    immutable: bool,
}

impl ReadOnlyDir {
    fn new(parent: &Path) -> Option<ReadOnlyDir> {
        use std::os::unix::fs::PermissionsExt;
        let path = parent.join("read-only");
        std::fs::create_dir(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o555)).unwrap();
        let immutable = nix_is_root();
        if immutable {
            let ok = std::process::Command::new("chattr")
                .arg("+i")
                .arg(&path)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                let reason = format!(
                    "chattr +i {} failed: as root, only an immutable directory refuses writes",
                    path.display()
                );
                let required = std::env::var("AUTOSNAP_REQUIRE_LOOP_TESTS").as_deref() == Ok("1");
                assert!(!required, "AUTOSNAP_REQUIRE_LOOP_TESTS=1 but {reason}");
                eprintln!("skipped: {reason}");
                return None;
            }
        }
        let dir = ReadOnlyDir { path, immutable };
        assert!(
            std::fs::write(dir.path.join("probe"), b"x").is_err(),
            "{} is still writable",
            dir.path.display()
        );
        Some(dir)
    }
}

impl Drop for ReadOnlyDir {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        if self.immutable {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(&self.path)
                .status();
        }
        let _ = std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o755));
    }
}

fn nix_is_root() -> bool {
    // The owner of a file we just created is our effective uid.
    use std::os::unix::fs::MetadataExt;
    let f = tempfile::NamedTempFile::new().unwrap();
    f.as_file().metadata().unwrap().uid() == 0
}

/// Asserts that an I/O failure names `path` (what the user typed) and no temp file.
fn assert_names_user_path(err: &str, path: &Path) {
    assert!(
        err.contains(&format!("cannot write {}", path.display())),
        "the message names {}: {err}",
        path.display()
    );
    assert!(
        !err.contains(".autosnap-"),
        "no temp file in the message: {err}"
    );
    assert!(
        err.contains("ermission denied") || err.contains("not permitted"),
        "{err}"
    );
}

#[test]
fn download_into_a_read_only_directory_names_the_target_path() {
    let bed = TestBed::start();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("disk.img");
    std::fs::write(&src, vec![7u8; 524_288]).unwrap();
    let up = bed.json(&["upload", src.to_str().unwrap(), "--wait"]);
    let snap = up["snapshot_id"].as_str().unwrap().to_string();

    let Some(ro) = ReadOnlyDir::new(dir.path()) else {
        return;
    };
    let target = ro.path.join("out.img");
    let out = bed
        .cmd()
        .args(["download", &snap, target.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_names_user_path(&stderr(&out), &target);
}

#[test]
fn restore_to_a_file_in_a_read_only_directory_names_the_target_path() {
    let bed = TestBed::offline();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let repo_s = repo.to_str().unwrap();
    bed.cmd().args(["repo", "init", repo_s]).assert().success();
    let src = dir.path().join("disk.img");
    std::fs::write(&src, vec![7u8; 524_288]).unwrap();
    let repository =
        Repository::open(Arc::new(LocalBackend::new(&repo)), Credentials::None).unwrap();
    repository
        .import_file(
            &src,
            ImportOptions {
                source: Some(ArchiveSource::new(SourceKind::File, "disk")),
                ..ImportOptions::default()
            },
        )
        .unwrap();
    let list = bed.json(&["repo", "list", repo_s]);
    let id = list[0]["id"].as_str().unwrap().to_string();

    let Some(ro) = ReadOnlyDir::new(dir.path()) else {
        return;
    };
    let target = ro.path.join("restored.img");
    let out = bed
        .cmd()
        .args([
            "restore",
            &id,
            "--repo",
            repo_s,
            "--to-file",
            target.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_names_user_path(&stderr(&out), &target);
}

#[test]
fn init_into_a_read_only_directory_names_the_config_path() {
    let bed = TestBed::start();
    let dir = tempfile::tempdir().unwrap();
    let Some(ro) = ReadOnlyDir::new(dir.path()) else {
        return;
    };
    let target = ro.path.join("autosnap.toml");
    let out = bed
        .cmd()
        .arg("-c")
        .arg(&target)
        .arg("init")
        .output()
        .unwrap();
    let err = printed(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "cannot write {}: cannot create a file in {}",
            target.display(),
            ro.path.display()
        )),
        "{err}"
    );
    assert!(!err.contains(".tmp-"), "no temp file in the message: {err}");
}

#[test]
fn a_missing_password_file_is_named() {
    let bed = TestBed::offline();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let missing = dir.path().join("no-such-password");
    let out = bed
        .cmd()
        .args([
            "repo",
            "init",
            repo.to_str().unwrap(),
            "--encrypt",
            "--password-file",
        ])
        .arg(&missing)
        .output()
        .unwrap();
    let err = assert_usage_error(&out);
    assert!(
        err.contains(&format!(
            "cannot read --password-file {}",
            missing.display()
        )),
        "{err}"
    );
    assert!(err.contains("No such file or directory"), "{err}");
    assert!(!repo.exists(), "nothing was created");
}

// ---- config errors: the reason on the first line, in the user's words --------

fn config_check(bed: &TestBed, text: &str) -> (PathBuf, String) {
    let cfg = bed.write_config("bad.toml", text, 0o644);
    let out = bed
        .bare_cmd()
        .arg("-c")
        .arg(&cfg)
        .args(["config", "check"])
        .output()
        .unwrap();
    (cfg, assert_usage_error(&out))
}

/// The line that gives the reason (in `config check`'s table, its DETAIL column), which
/// must come before toml's picture of the offending line.
fn reason_line<'a>(err: &'a str, reason: &str) -> &'a str {
    let lines: Vec<&str> = err.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains(reason))
        .unwrap_or_else(|| panic!("no line says {reason:?}: {err}"));
    assert!(
        !lines[..at]
            .iter()
            .any(|l| l.contains(" | ") || l.contains("^^")),
        "the reason comes before the snippet: {err}"
    );
    lines[at]
}

#[test]
fn an_unknown_config_key_is_named_with_its_place_and_the_likely_key_first() {
    let bed = TestBed::offline();
    let (cfg, err) = config_check(
        &bed,
        "# autosnap\n[aws]\nregoin = \"us-east-1\"\nprofile = \"x\"\n",
    );
    let line = reason_line(
        &err,
        "unknown key \"regoin\" in [aws] at line 3, column 1; did you mean \"region\"?",
    );
    assert!(line.contains(&cfg.display().to_string()), "{err}");
    assert!(!err.contains("unknown field"), "{err}");
    // toml's picture of the line follows.
    assert!(err.contains("3 | regoin = \"us-east-1\""), "{err}");
}

#[test]
fn config_type_errors_speak_the_users_language() {
    let bed = TestBed::offline();
    let (_, err) = config_check(&bed, "[aws]\nmax_attempts = \"five\"\n");
    reason_line(
        &err,
        "aws.max_attempts at line 2, column 16: expected a whole number (0 or more), found the \
         string \"five\"",
    );
    assert!(!err.contains("u32"), "{err}");

    let (_, err) = config_check(&bed, "[defaults]\ncopy_volume_tags = \"yes\"\n");
    reason_line(
        &err,
        "defaults.copy_volume_tags at line 2, column 20: expected true or false, found the string \"yes\"",
    );
    assert!(!err.contains("a boolean"), "{err}");

    let (_, err) = config_check(&bed, "[aws]\nregion = 1\n");
    reason_line(
        &err,
        "aws.region at line 2, column 10: expected a string in quotes, found the number 1",
    );
}
